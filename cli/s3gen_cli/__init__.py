"""`s3gen-aot`, the command line: a thin click layer over library functions; imports no torch until an export command runs."""
