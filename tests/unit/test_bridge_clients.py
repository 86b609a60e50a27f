"""The bridge's clients: the keys file (parsing, rotation without a restart, a bad edit
kept out) and each client's request rate limit."""

import hashlib
import os

import pytest

from producers.bridge_clients import ANONYMOUS, Client, Clients, KeysFileError, add_key, read_keys


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def touched(path, seconds: int) -> None:
    """Give ``path`` a modification time of its own (two writes can share one)."""
    os.utime(path, (seconds, seconds))


def test_the_keys_file_names_each_key_s_client_and_limit(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(
        f"# client  key  limit\n\nsvc-a {digest('a1')}   # first key\nsvc-a {digest('a2')} 5/second\n"
        f"svc-b {digest('b1')} 100 per minute\n"
    )
    clients = Clients(keys, single_key="the-old-key", default_limit="50/second")
    assert clients.client_of("a1").name == clients.client_of("a2").name == "svc-a"
    assert clients.client_of("a1").limit is None and str(clients.client_of("a2").limit) == "5 per 1 second"
    assert str(clients.client_of("b1").limit) == "100 per 1 minute"
    assert clients.client_of("the-old-key") == Client("default", None)  # RENTALSTREAM_BRIDGE_API_KEY
    assert clients.client_of("a3") is None and clients.client_of(None) is None
    assert clients.count() == 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("svc-a", "expected `<client> <SHA-256"),
        ("svc-a the-key-itself", "expected `<client> <SHA-256"),
        (f"svc-a {digest('a1').upper()}", "expected `<client> <SHA-256"),
        (f"svc-a {digest('a1')} fast", "couldn't parse rate limit"),
        (f"svc-a {digest('a1')}\nsvc-b {digest('a1')}", "already 'svc-a'"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(tmp_path, line, reason):
    keys = tmp_path / "keys"
    keys.write_text("# keys\n" + line + "\n")
    with pytest.raises(KeysFileError, match=reason) as refused:
        read_keys(keys)
    assert f"{keys}:" in str(refused.value)


def test_keys_are_rotated_without_a_restart_and_a_bad_edit_keeps_the_keys_read_before(tmp_path, caplog):
    keys = tmp_path / "keys"
    old = add_key(keys, "svc-a")
    clients = Clients(keys, None, None, reload_seconds=0)
    assert clients.client_of(old).name == "svc-a"
    new = add_key(keys, "svc-a")  # step 1: the new key beside the old one
    touched(keys, 1_000)
    assert clients.client_of(new).name == clients.client_of(old).name == "svc-a"
    keys.write_text("".join(line + "\n" for line in keys.read_text().splitlines() if digest(old) not in line))
    touched(keys, 2_000)  # step 2: the old key removed
    assert clients.client_of(old) is None and clients.client_of(new).name == "svc-a"
    keys.write_text(keys.read_text() + "half a line\n")
    touched(keys, 3_000)
    assert clients.client_of(new).name == "svc-a"  # kept, and the log says why
    assert "keeping the API keys read before" in caplog.text and ":2: expected" in caplog.text


def test_a_client_past_its_limit_waits_while_the_others_go_on(tmp_path):
    keys = tmp_path / "keys"
    fast = add_key(keys, "fast", limit="3/minute")
    slow = add_key(keys, "slow")
    clients = Clients(keys, None, default_limit="2/minute")
    a, b = clients.client_of(fast), clients.client_of(slow)
    assert [clients.retry_after(a, a.name) for _ in range(3)] == [None] * 3
    waits = [clients.retry_after(a, a.name) for _ in range(2)]
    assert all(1 <= wait <= 60 for wait in waits)  # within the minute's window
    assert [clients.retry_after(b, b.name) for _ in range(3)][:2] == [None, None]  # its own count, the default
    anonymous = Clients(None, None, default_limit="1/minute")
    caller = Client(ANONYMOUS, None)
    assert anonymous.retry_after(caller, "10.0.0.1") is None and anonymous.retry_after(caller, "10.0.0.2") is None
    assert anonymous.retry_after(caller, "10.0.0.1") is not None  # told apart by address
    assert Clients(None, None, None).retry_after(caller, "x") is None  # no limit set


def test_a_client_name_is_one_word(tmp_path):
    for name in ("two words", "", "a#b", "tab\there"):
        with pytest.raises(KeysFileError, match="one word"):
            add_key(tmp_path / "keys", name)
