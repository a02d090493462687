"""The CPU floors of the crypto a fetch and an upload must do, per GiB, on this machine.

    .venv/bin/python bench/floors.py [--mib 1024]

Each line is the CPU seconds (user + system, this process) per GiB of one
primitive over 1 MiB buffers, as the toolkit calls it: SHA-256 (``hashlib``,
OpenSSL), AES-256-CBC decryption and encryption (``cryptography``) into a
reused buffer and through ``update`` (a fresh ``bytes`` per call).  The last
two are run once more with glibc's mmap threshold raised
(:func:`azaion_loader.pipeline.reuse_big_allocations`, as `loader upload` does), to
show what fresh buffers cost in page faults.  A fetch must hash and decrypt
every byte, an upload encrypt and hash it twice (ciphertext and plaintext):
no tuning of the rest of the software goes below these.

The last lines price what the format itself decides (issue 15): primitives a
future format could use instead, per GiB in the same units. AES-256-GCM and
AES-256-CTR over the same 1 MiB buffers (GCM with a fresh nonce and tag per
MiB, as a chunked AEAD stream would; its tag replaces a whole-object digest),
and BLAKE2b-256 (``hashlib``) in place of SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from azaion_loader.pipeline import reuse_big_allocations

CHUNK = 1 << 20


def per_gib(label: str, mib: int, step: Callable[[], object]) -> None:
    start = time.process_time()
    for _ in range(mib):
        step()
    spent = time.process_time() - start
    print(f"{label:58s} {spent * 1024 / mib:5.2f} s/GiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    data = os.urandom(CHUNK)
    out = bytearray(CHUNK + 32)
    key, iv = os.urandom(32), os.urandom(16)

    def cipher() -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(key), modes.CBC(iv))

    digest = hashlib.sha256()
    per_gib("SHA-256", args.mib, lambda: digest.update(data))
    dec, enc = cipher().decryptor(), cipher().encryptor()
    per_gib(
        "AES-256-CBC decrypt, update_into a reused buffer",
        args.mib,
        lambda: dec.update_into(data, out),
    )
    per_gib("AES-256-CBC decrypt, update (a new bytes per MiB)", args.mib, lambda: dec.update(data))
    per_gib(
        "AES-256-CBC encrypt, update_into a reused buffer",
        args.mib,
        lambda: enc.update_into(data, out),
    )
    per_gib("AES-256-CBC encrypt, update (a new bytes per MiB)", args.mib, lambda: enc.update(data))
    if reuse_big_allocations():
        per_gib(
            "AES-256-CBC decrypt, update, mmap threshold raised", args.mib, lambda: dec.update(data)
        )
        per_gib(
            "AES-256-CBC encrypt, update, mmap threshold raised", args.mib, lambda: enc.update(data)
        )
    formats(args.mib, data, out, key)
    return 0


def formats(mib: int, data: bytes, out: bytearray, key: bytes) -> None:
    """What the primitives of another format would cost (see the module's docstring)."""
    counter = iter(range(1 << 62))

    def gcm_chunk(decrypt: bool) -> Callable[[], object]:
        sealed = Cipher(algorithms.AES(key), modes.GCM(bytes(12))).encryptor()
        sealed.update_into(data, out)
        sealed.finalize()
        tag = sealed.tag

        def step() -> object:
            nonce = next(counter).to_bytes(12, "big")
            if decrypt:
                # The tag will not match (the nonce differs): the cost is the same.
                ctx = Cipher(algorithms.AES(key), modes.GCM(nonce, tag)).decryptor()
                ctx.update_into(data, out)
                return None
            ctx = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
            ctx.update_into(data, out)
            ctx.finalize()
            return ctx.tag

        return step

    per_gib("format: AES-256-GCM encrypt, a nonce and tag per MiB", mib, gcm_chunk(False))
    per_gib("format: AES-256-GCM decrypt (tag not checked), per MiB", mib, gcm_chunk(True))
    ctr = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    per_gib(
        "format: AES-256-CTR, update_into a reused buffer", mib, lambda: ctr.update_into(data, out)
    )
    blake = hashlib.blake2b(digest_size=32)
    per_gib("format: BLAKE2b-256 in place of SHA-256", mib, lambda: blake.update(data))


if __name__ == "__main__":
    sys.exit(main())
