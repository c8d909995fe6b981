"""Parsing a pasted public key: what is accepted, and each way a paste is refused."""

from __future__ import annotations

import base64
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from accounts import sshkeys
from tests.support import public_key_line


def refusal(text) -> sshkeys.KeyRefused:
    with pytest.raises(sshkeys.KeyRefused) as caught:
        sshkeys.parse(text)
    return caught.value


@pytest.mark.parametrize(("kind", "bits", "expected_type", "expected_bits"), [
    ("ed25519", 0, "ssh-ed25519", 256),
    ("ecdsa", 0, "ecdsa-sha2-nistp256", 256),
    ("rsa", 2048, "ssh-rsa", 2048),
    ("rsa", 4096, "ssh-rsa", 4096),
])
def test_it_accepts_the_usual_key_types(kind, bits, expected_type, expected_bits):
    line = public_key_line(kind, comment="alice@laptop", bits=bits or 2048)
    key = sshkeys.parse(line)
    assert (key.type, key.bits, key.comment) == (expected_type, expected_bits, "alice@laptop")
    assert key.line == line.strip()


def test_its_fingerprint_is_the_one_ssh_keygen_shows(tmp_path):
    line = public_key_line()
    (tmp_path / "k.pub").write_text(line)
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True,
                           text=True, check=True).stdout.split()[1]
    assert sshkeys.parse(line).fingerprint == shown


def test_it_keeps_the_loader_s_form_of_the_key_not_the_paste():
    line = public_key_line(comment="")
    key = sshkeys.parse(line)
    assert key.key == line.strip() and key.comment == ""


def test_it_refuses_a_1024_bit_rsa_key_saying_why():
    error = refusal(public_key_line("rsa", bits=1024))
    assert not error.malformed
    assert str(error) == "RSA keys must have 2048 to 16384 bits; this one has 1024"


def test_it_refuses_a_truncated_key_as_data_that_does_not_decode():
    kind, blob, comment = public_key_line().split()
    error = refusal(f"{kind} {blob[:-12]} {comment}")
    assert not error.malformed
    assert "does not decode" in str(error)


def test_it_refuses_a_key_whose_data_is_another_type():
    _, blob, _ = public_key_line("ed25519").split()
    error = refusal(f"ssh-rsa {blob}")
    assert not error.malformed
    assert "does not decode" in str(error) or "not ssh-rsa" in str(error)


@pytest.mark.parametrize("text", [
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",  # DSA: OpenSSH itself has dropped it
    "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAI",
    "hello",
    "",
    "   ",
    None,
    42,
    'command="rm -rf /" ' + public_key_line().strip(),  # options are ours to set
    public_key_line().strip() + "\nssh-ed25519 AAAA second@line",  # one key per paste
    public_key_line().strip() + "\x00",
    public_key_line(comment="x" * 256),
    " " + public_key_line(),
    "ssh-ed25519 " + "A" * 9000,
], ids=[  # named, not shown: the keys are made afresh at each collection (and each xdist worker's)
    "dsa", "security-key", "a-word", "empty", "blanks", "none", "a-number", "with-options",
    "two-lines", "nul-byte", "long-comment", "leading-blank", "huge-blob",
])
def test_it_refuses_what_is_not_one_public_key_line(text):
    error = refusal(text)
    assert error.malformed
    assert "OpenSSH public key" in str(error)


def test_it_says_plainly_when_a_private_key_is_pasted():
    private = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    error = refusal(private)
    assert error.malformed
    assert str(error).startswith("is a private key: paste the public key")


def test_its_pattern_is_the_schema_s_and_the_server_s():
    # What the pattern admits, the parser only refuses for what the data holds.
    assert sshkeys.PATTERN.startswith("^") and sshkeys.PATTERN.endswith("$")
    garbage = "ssh-ed25519 " + base64.b64encode(b"not a key at all").decode()
    assert not refusal(garbage).malformed
