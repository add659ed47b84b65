"""Published transcoder releases: readers of every format they come in (SAELens folders,
circuit-tracer configs and CLTs, GemmaScope npz, GemmaScope 2, Qwen3, mntss CLTs), Hugging Face
references, sae_lens release names, and a writer of memory-mappable copies.

The entries are :func:`tl_circuits.load_transcoders` and
:func:`tl_circuits.transcoders.convert_transcoders` (in :mod:`.load`); this package's
``__init__`` imports nothing, so :mod:`tl_circuits.transcoders.lazy` can use its modules.
"""
