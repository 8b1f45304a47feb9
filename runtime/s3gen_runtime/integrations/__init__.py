"""Adapters that put the runtime behind another project's API. Each one imports only what its host already
uses (chatterbox: torch), so importing this package, or the rest of the runtime, stays torch-free."""
