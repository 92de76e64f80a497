#!/usr/bin/env python3
"""Decrypts one Web Push body with http_ece, the aes128gcm implementation pywebpush uses.

The notifier's Web Push interop test (src/push/webpush/tests.rs) runs this on a push the
notifier encrypted, so that the notifier and the stand-in cannot agree on a mistake.

    webpush_decrypt.py BODY_FILE PRIVATE_KEY_FILE AUTH_FILE

BODY_FILE holds the encrypted body as sent; PRIVATE_KEY_FILE the subscription's P-256 private
key (the 32-byte scalar); AUTH_FILE its 16-byte auth secret. The plaintext goes to stdout.
"""

import sys

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec


def main(body_path: str, key_path: str, auth_path: str) -> None:
    with open(body_path, "rb") as f:
        body = f.read()
    with open(key_path, "rb") as f:
        scalar = int.from_bytes(f.read(), "big")
    with open(auth_path, "rb") as f:
        auth = f.read()
    private_key = ec.derive_private_key(scalar, ec.SECP256R1())
    # aes128gcm carries the sender's public key in its header (keyid): http_ece reads it there.
    plaintext = http_ece.decrypt(
        body, private_key=private_key, auth_secret=auth, version="aes128gcm"
    )
    sys.stdout.buffer.write(plaintext)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
