"""TradingView's webhook client certificate, as the TLS proxy in front of the edge verified it.

Envoy (deploy/envoy/envoy-tradingview-client-certificate.yaml) verifies the certificate's chain against
TradingView's CA bundle and its SAN, then passes the subject in X-Forwarded-Client-Cert, replacing any
copy a client sent. Here only the subject is left to match. The header is believed only when the edge is
told to (ALERTS_TRUST_FORWARDED_CLIENT_CERT) and only from a trusted proxy's address.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

TRADINGVIEW_COMMON_NAME = "TradingView Webhooks"
TRADINGVIEW_ORGANIZATION = "TradingView, Inc."


def forwarded_subject(header: str) -> str | None:
    """The Subject of a one-element X-Forwarded-Client-Cert value; None for anything else.

    Several elements mean more than one proxy forwarded a certificate, which Envoy's SANITIZE_SET never
    produces, so such a header proves nothing.
    """
    fields: dict[str, str] = {}
    position = 0
    while position < len(header):
        separator = header.find("=", position)
        if separator < 0:
            return None
        key = header[position:separator].strip().lower()
        position = separator + 1
        value, position = _value(header, position)
        if value is None or key in fields:
            return None
        fields[key] = value
        if position < len(header):
            if header[position] != ";":
                return None
            position += 1
    return fields.get("subject")


def _value(header: str, position: int) -> tuple[str | None, int]:
    """A field's value starting at position, and where the next field starts; None when malformed."""
    if header.startswith('"', position):
        characters = []
        position += 1
        while position < len(header):
            character = header[position]
            # Envoy quotes the subject as OpenSSL prints it (RFC 4514), escapes kept: an escaped
            # character, a quote included, belongs to the subject.
            if character == "\\" and position + 1 < len(header):
                characters.append(header[position : position + 2])
                position += 2
            elif character == '"':
                return "".join(characters), position + 1
            else:
                characters.append(character)
                position += 1
        return None, position
    end = len(header)
    for delimiter in (";", ",", '"'):
        found = header.find(delimiter, position)
        if found >= 0:
            end = min(end, found)
    if end < len(header) and header[end] != ";":
        return None, end
    return header[position:end], end


def is_tradingview_subject(subject: str) -> bool:
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        return False
    common_names = [attribute.value for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
    organizations = [attribute.value for attribute in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return common_names == [TRADINGVIEW_COMMON_NAME] and organizations == [TRADINGVIEW_ORGANIZATION]


def tradingview_certificate_verified(headers: list[str]) -> bool:
    """Whether the proxy's X-Forwarded-Client-Cert lines name TradingView's webhook certificate."""
    if len(headers) != 1:
        return False
    subject = forwarded_subject(headers[0])
    return subject is not None and is_tradingview_subject(subject)
