"""Imports every domain's models so that ``Base.metadata`` knows the whole schema (Alembic,
test fixtures)."""

from .accounts import models as accounts_models  # noqa: F401
from .audit import AuditEvent  # noqa: F401
from .budgets import models as budgets_models  # noqa: F401
from .catalog import models as catalog_models  # noqa: F401
from .catalog.search import models as search_models  # noqa: F401
from .db import Base
from .idempotency import IdempotencyKey  # noqa: F401
from .orders import models as orders_models  # noqa: F401
from .pricing import models as pricing_models  # noqa: F401
from .transparency import models as transparency_models  # noqa: F401

metadata = Base.metadata
