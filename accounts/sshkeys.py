"""Parsing an OpenSSH public key as a user pastes it: `<type> <base64> [comment]`.

The key is loaded by `cryptography`'s SSH loader, never trusted as text: the blob
must decode to a key of the type its line names, of a type and size we accept, and
what we store and put in a guest's authorized_keys is the loader's re-serialisation
of it, so nothing the user typed besides the comment reaches the guest. The
comment is held to printable text, which keeps a newline from adding a line (and so
options, or another key) to authorized_keys. A key line with options in front
(`command="…" ssh-ed25519 …`) is refused: options are ours to set, not the user's.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# An RSA key of 4096 bits is about 720 base64 characters; 16384 bits, the most
# ssh-keygen makes, about 2,800. Far above any real key, far below a problem.
TEXT_MAX = 8192
COMMENT_MAX = 255
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384
TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
RULE = ("must be an OpenSSH public key: one line of <type> <base64> [comment], as in a .pub file, "
        f"of type {', '.join(TYPES)}")
# The line's syntax, for Python's re (fullmatch) and the schema's ECMA regex alike; a
# .pub file's own trailing newline is allowed.
PATTERN = (rf"^({'|'.join(TYPES)}) [A-Za-z0-9+/]+={{0,2}}"
           rf"( [^\x00-\x1f\x7f]{{0,{COMMENT_MAX}}})?\n?$")


@dataclass(frozen=True)
class PublicKey:
    type: str  # "ssh-ed25519"
    key: str  # "<type> <base64>", canonical: what authorized_keys gets (with the comment)
    bits: int
    fingerprint: str  # "SHA256:…", as `ssh-keygen -l` prints it
    comment: str

    @property
    def line(self) -> str:
        return f"{self.key} {self.comment}".rstrip()


class KeyRefused(ValueError):
    """Why a text is not an acceptable public key. `malformed`: the line's syntax is
    wrong (what a schema can state); otherwise the key it encodes is refused."""

    def __init__(self, message: str, *, malformed: bool):
        super().__init__(message)
        self.malformed = malformed


def parse(text) -> PublicKey:
    if isinstance(text, str) and text.lstrip().startswith("-----BEGIN") and "PRIVATE KEY" in text[:100]:
        # Said plainly, because the cure is plain: paste the .pub file instead.
        raise KeyRefused("is a private key: paste the public key (the .pub file) instead, and keep "
                         "the private key to yourself", malformed=True)
    if not isinstance(text, str) or len(text) > TEXT_MAX:
        raise KeyRefused(f"{RULE}, at most {TEXT_MAX} characters", malformed=True)
    line = re.fullmatch(PATTERN, text)
    if line is None:
        raise KeyRefused(RULE, malformed=True)
    kind, blob_text = text.rstrip("\n").split(" ", 2)[:2]
    comment = line.group(2) or ""
    try:
        loaded = serialization.load_ssh_public_key(f"{kind} {blob_text}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRefused("the key data does not decode to a public key (truncated or altered?)",
                         malformed=False) from None
    bits = _bits(loaded)
    if isinstance(loaded, rsa.RSAPublicKey) and not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
        raise KeyRefused(f"RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits; this one has {bits}",
                         malformed=False)
    key = loaded.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    if key.split(" ")[0] != kind:  # the blob names its own type; it must be the line's
        raise KeyRefused(f"the key data is a {key.split(' ')[0]} key, not {kind}", malformed=False)
    blob = base64.b64decode(key.split(" ")[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return PublicKey(type=kind, key=key, bits=bits, fingerprint=f"SHA256:{digest}", comment=comment.strip())


def _bits(key) -> int:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return key.key_size
    raise KeyRefused(f"the key data is not of an accepted type ({', '.join(TYPES)})", malformed=False)
