"""The wire layer: what crosses the network between server and clients, and what it costs.

Sparse codec (pure numpy), bottom up:

* ``errors``: ``PayloadError``, raised by every decoder on input it cannot decode.
* ``bits``: bit-stream packing helpers and the bounded ``BitReader``.
* ``golomb``: Golomb coding of the gaps between kept entries.
* ``enumerative``: enumerative coding of 64-entry blocks, with canonical Huffman block counts.
* ``positions``: the position schemes (bitmap, Golomb, enumerative, per-row enumerative, known,
  full, empty): choosing the smallest, encoding, decoding, their bounds and the entropy bounds.
* ``values``: value dtypes (float32, float16, bfloat16, ...) and lossless compression.
* ``buffer``: one tensor's buffer: header layout, ``BufferInfo``, parsing with hostile-input
  bounds.
* ``codec``: the public API: ``encode_mask``, ``decode_mask``, ``encode_tensor``,
  ``decode_tensor``, ``inspect``.

On top of it:

* ``records``: payloads <-> Flower records, and message byte counts (imports ``flwr``).
* ``ledger``: the communication ledger, one row per message.
* ``protocol``: the message protocol's record names and header keys.
"""
