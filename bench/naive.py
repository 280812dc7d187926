"""A naive Kantata -> Noko backfill, written for the benchmark as the thing to compare against.

It produces the same Noko invoices as the connector (it uses the same pure mapping), but talks
to the APIs the way a first attempt would:

- Kantata: page-number paging over `GET /invoices.json?page=N` with the default page size and
  no `include`, then one `GET /invoices/{id}.json?include=...` per invoice to get its line
  items, and one `PUT` write-back per invoice.
- Noko: for every line item a project lookup (`GET /projects?name=`) and the expense create;
  then the invoice create and a `GET /invoices/{id}` to read the totals back.
- No pacing: each request goes out as soon as the previous one is answered; a 429 is waited
  out (its Retry-After, else one second) and the request repeated.
- Sequential: one invoice at a time, no state file, no recovery.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from connector.http import decode_json, encode_json, parse_retry_after
from connector.kantata.client import INVOICE_INCLUDES
from mappings.kantata import KantataInvoice, decode_invoices
from mappings.profile import default_profile
from mappings.targets.noko import check_totals, plan_invoice
from mappings.to_ledger import to_ledger

__all__ = ["NaiveResult", "naive_backfill"]


@dataclass
class NaiveResult:
    pushed: int = 0
    skipped: int = 0
    failed: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    status_429: Counter[str] = field(default_factory=Counter)


class _Api:
    def __init__(self, name: str, base_url: str, headers: dict[str, str], result: NaiveResult):
        self.name = name
        self.result = result
        self.client = httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=60)

    def call(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        content = encode_json(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        while True:
            self.result.requests[self.name] += 1
            response = self.client.request(
                method, path.lstrip("/"), params=params, content=content, headers=headers
            )
            if response.status_code == 429:
                self.result.status_429[self.name] += 1
                time.sleep(parse_retry_after(response.headers.get("retry-after")) or 1.0)
                continue
            response.raise_for_status()
            return decode_json(response.content) if response.content else None


def naive_backfill(
    kantata_url: str, kantata_token: str, noko_url: str, noko_token: str
) -> NaiveResult:
    """Push every eligible Kantata invoice to Noko and write the reference back."""
    result = NaiveResult()
    profile = default_profile()
    kantata = _Api(
        "kantata",
        kantata_url,
        {"Authorization": f"Bearer {kantata_token}", "Accept": "application/json"},
        result,
    )
    noko = _Api(
        "noko",
        noko_url,
        {"X-NokoToken": noko_token, "User-Agent": "naive-bench", "Accept": "application/json"},
        result,
    )
    ids: list[str] = []
    page = 1
    while True:
        body = kantata.call("GET", "/invoices.json", params={"page": page})
        ids.extend(str(item["id"]) for item in body["results"])
        if page >= int(body["meta"]["page_count"]):
            break
        page += 1
    include = ",".join(INVOICE_INCLUDES)
    for invoice_id in ids:
        body = kantata.call("GET", f"/invoices/{invoice_id}.json", params={"include": include})
        (invoice,) = decode_invoices(body)
        if not isinstance(invoice, KantataInvoice) or invoice.draft or invoice.is_cancelled:
            result.skipped += 1
            continue
        plan = plan_invoice(to_ledger(invoice, profile))
        expense_ids = []
        for line in plan.expenses:
            found = noko.call("GET", "/projects", params={"name": line.project})
            match = [p for p in found if p.get("name") == line.project]
            project = (
                match[0] if match else noko.call("POST", "/projects", body={"name": line.project})
            )
            created = noko.call(
                "POST",
                "/expenses",
                body={
                    "project_id": int(project["id"]),
                    "date": line.date,
                    "price": line.price,
                    "taxable": line.taxable,
                    "description": line.description,
                },
            )
            expense_ids.append(int(created["id"]))
        created = noko.call("POST", "/invoices", body=plan.create_body(expense_ids))
        noko_invoice = noko.call("GET", f"/invoices/{int(created['id'])}")
        if check_totals(plan, noko_invoice):
            result.failed += 1
            continue
        kantata.call(
            "PUT",
            f"/invoices/{invoice_id}.json",
            body={
                "invoice": {
                    "external_reference": {
                        "service_name": "noko",
                        "service_model": "invoice",
                        "service_model_ref": str(noko_invoice["id"]),
                        "status": "successful",
                        "external_link": str(noko_invoice.get("url") or ""),
                    }
                }
            },
        )
        result.pushed += 1
    kantata.client.close()
    noko.client.close()
    return result
