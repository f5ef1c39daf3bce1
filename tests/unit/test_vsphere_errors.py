"""A vCenter that restarts cuts its TLS streams: the driver must see a connection problem
to retry, not an untrusted certificate or a permanent failure."""

from __future__ import annotations

import ssl

import requests
import urllib3

from drivers.errors import TransientError, UserError
from drivers.vsphere_datastore import untrusted
from drivers.vsphere_session import translate


def _requests_ssl_error(inner: BaseException) -> requests.exceptions.SSLError:
    reason = urllib3.exceptions.SSLError(inner)
    retry = urllib3.exceptions.MaxRetryError(None, "/folder/x", reason)  # type: ignore[arg-type]
    try:
        try:
            raise retry
        except urllib3.exceptions.MaxRetryError as e:
            raise requests.exceptions.SSLError(e) from e
    except requests.exceptions.SSLError as exc:
        return exc


def test_cut_tls_stream_is_not_an_untrusted_certificate() -> None:
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert not untrusted(_requests_ssl_error(eof))
    bad = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert untrusted(_requests_ssl_error(bad))


def test_tls_eof_on_a_soap_call_is_transient() -> None:
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert isinstance(translate(eof, "remove snapshot"), TransientError)
    bad = ssl.SSLCertVerificationError(1, "certificate verify failed")
    bad.verify_message = "self-signed certificate"
    assert isinstance(translate(bad, "login"), UserError)
