"""The ledger document's `customer_id`: Kantata's id of the customer (the invoice's recipient)
when the customer's name is the recipient's, and never part of the fingerprint."""

from __future__ import annotations

from dataclasses import replace

from mappings.kantata import KantataUser
from mappings.profile import default_profile, parse_profile
from mappings.to_ledger import to_ledger
from tests.test_ledger_fingerprints import _two_projects


def test_the_customer_id_is_the_recipients_when_the_name_is_the_recipients() -> None:
    doc = to_ledger(_two_projects(), default_profile())
    assert (doc.customer_name, doc.customer_id) == ("Jane Lead", "9")


def test_a_name_from_the_operators_table_by_recipient_keeps_the_recipients_id() -> None:
    profile = parse_profile('[customer.names]\n"jane@client.example" = "Harbour Ltd"\n')
    doc = to_ledger(_two_projects(), profile)
    assert (doc.customer_name, doc.customer_id) == ("Harbour Ltd", "9")


def test_no_customer_id_when_the_name_is_not_the_recipients() -> None:
    by_project = parse_profile('[customer]\nsource = "workspace"\n')
    assert to_ledger(_two_projects(), by_project).customer_id is None
    by_table = parse_profile('[customer.names]\n"53" = "Harbour Ltd"\n')
    doc = to_ledger(_two_projects(), by_table)
    assert (doc.customer_name, doc.customer_id) == ("Harbour Ltd", None)
    nameless = replace(_two_projects(), recipient=KantataUser("9", " ", "jane@client.example"))
    assert to_ledger(nameless, default_profile()).customer_id is None
    assert (
        to_ledger(replace(_two_projects(), recipient=None), default_profile()).customer_id is None
    )


def test_the_customer_id_is_not_part_of_the_fingerprint() -> None:
    doc = to_ledger(_two_projects(), default_profile())
    assert replace(doc, customer_id="other").fingerprint() == doc.fingerprint()
    assert replace(doc, customer_id=None).fingerprint() == doc.fingerprint()
