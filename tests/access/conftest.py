"""A demo shop with access policies (models/access.yml), and the identities the access tests ask as.

Expected answers in these tests are hand-written SQL over the raw.* tables of the demo's DuckDB file with the
policy's condition applied, never Phloem's SQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from semantic.access.context import SecurityContext
from semantic.demo import create

SCALE = 2000

# Managers see their country's rows; partners their channels', and only sales metrics; analysts see every row
# but no cost member; auditors every row of everything. `revenue_benchmark` is public: the shop-wide total.
ACCESS = """
metrics:
  - {name: revenue_benchmark, measure: orders.gross_revenue, public: true, description: The whole shop's revenue.}
  - {name: revenue_share, expr: revenue / revenue_benchmark, format: percent}

access_policies:
  - name: country_managers
    role: manager
    rows: "country = {{ user.country }}"
    views: [orders, order_lines, customers]
    exclude:
      dimensions: [orders.acquisition_channel]

  - name: channel_partners
    roles: [partner]
    rows: "channel in {{ user.channels }}"
    views: [orders, order_lines]
    include:
      metrics: [revenue, orders, aov, discounts, revenue_mtd, revenue_7d, revenue_mom, revenue_benchmark,
                revenue_share, buyers]
      views: [orders]

  - name: analysts
    role: analyst
    exclude:
      metrics: [cogs, costs, profit, margin]
      measures: [order_lines.cogs]

  - name: auditors
    role: auditor

  - name: acquisition_leads
    role: acquisition
    rows: "orders.acquisition_channel = {{ user.acquisition }}"
    views: [orders]
"""

IDENTITIES = {
    "us_manager": SecurityContext("ann", frozenset({"manager"}), attributes={"country": "US"}),
    "de_manager": SecurityContext("dirk", frozenset({"manager"}), attributes={"country": "DE"}),
    "web_partner": SecurityContext("wes", frozenset({"partner"}), attributes={"channels": ["web"]}),
    "app_partner": SecurityContext("pat", frozenset({"partner"}), attributes={"channels": ["app", "marketplace"]}),
    "partner_manager": SecurityContext("pam", frozenset({"partner", "manager"}),
                                       attributes={"country": "FR", "channels": ["app"]}),
    "analyst": SecurityContext("al", frozenset({"analyst"})),
    "auditor": SecurityContext("aud", frozenset({"auditor"})),
    "claimless_manager": SecurityContext("cm", frozenset({"manager"})),
    "injector": SecurityContext("eve", frozenset({"manager"}), attributes={"country": "US' OR 1=1 --"}),
    "nobody": SecurityContext("nobody", frozenset({"guest"})),
    "acquired_search": SecurityContext("ada", frozenset({"acquisition"}), attributes={"acquisition": "paid_search"}),
}


def make_shop(root: Path, access: str = ACCESS, scale: int = SCALE) -> Path:
    create(root, scale=scale)
    (root / "models" / "access.yml").write_text(access)
    return root


@pytest.fixture(scope="session")
def shop_dir(tmp_path_factory) -> Path:
    return make_shop(tmp_path_factory.mktemp("access") / "shop")
