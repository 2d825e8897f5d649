"""Hosts described for the tests of what 'auto' decides (kernel rewrites,
precision), as `auto` sees them."""

from masklab_tf import host as host_lib


# Hosts as 'auto' sees them: x86 with AVX-512 and TF's oneDNN kernels (as
# the Xeon and the Zen 4 EPYC of docs/perf-notes.md), x86 with TF's Eigen
# kernels (as its Zen 3 EPYC), and a oneDNN CPU beside a GPU.
ONEDNN_HOST = host_lib.Host(cpu_vendor='GenuineIntel',
                            cpu_flags=frozenset({'avx512f', 'amx_bf16'}),
                            onednn=True)
EIGEN_HOST = host_lib.Host(cpu_vendor='AuthenticAMD',
                           cpu_flags=frozenset({'avx2'}), onednn=False)
GPU_HOST = host_lib.Host(cpu_vendor='AuthenticAMD',
                         cpu_flags=frozenset({'avx512f', 'avx512_bf16'}),
                         onednn=True,
                         gpus=(host_lib.Gpu('NVIDIA H100', (9, 0)),))
# A GPU with float16 but no bfloat16 tensor cores (Volta) beside an
# AVX-512 CPU.
VOLTA_HOST = host_lib.Host(cpu_vendor='GenuineIntel',
                           cpu_flags=frozenset({'avx512f'}), onednn=True,
                           gpus=(host_lib.Gpu('Tesla V100', (7, 0)),))
