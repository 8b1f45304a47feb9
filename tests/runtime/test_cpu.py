"""CPU feature detection: parsing /proc/cpuinfo text and classifying the int8 dot-product path."""
from s3gen_runtime.cpu import cpu_info, describe, int8_dot_product, parse_cpuinfo

AVX2_ONLY = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma
"""
SAPPHIRE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
"""


def test_parse_keeps_known_features_in_order():
    assert parse_cpuinfo(AVX2_ONLY) == {"model": "AMD EPYC 7B13", "flags": ["avx2", "fma"]}
    assert parse_cpuinfo(SAPPHIRE)["flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                                                "amx_int8", "amx_bf16"]


def test_int8_path_by_flags():
    assert int8_dot_product(["avx2", "fma"]) == "saturating-16bit"
    assert int8_dot_product(["avx2", "avx512f"]) == "saturating-16bit"
    assert int8_dot_product(["avx2", "avx_vnni"]) == "vnni"
    assert int8_dot_product(["avx512f", "avx512_vnni"]) == "vnni"
    assert int8_dot_product([]) == "unknown"


def test_this_machine_is_described():
    info = cpu_info()
    assert set(info) == {"model", "arch", "cores", "flags", "int8_dot_product"}
    assert info["int8_dot_product"] == int8_dot_product(info["flags"])
    assert "int8 via" in describe(info)
