"""``POST /ai/analyze``, ``GET /ai/analyses/{id}``, ``GET /ai/analyses`` (the user's history)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import fastapi
import pydantic

from starkmatter.ai import config, models, offline, service
from starkmatter.api import deps
from starkmatter.core import errors, schemas
from starkmatter.core.auth import tokens

router = fastapi.APIRouter(prefix="/ai", tags=["ai"])


async def get_service(request: fastapi.Request, res: deps.ResourcesDep) -> service.AnalysisService:
    """One service per app, made on first use (it holds in-flight requests and the breaker)."""
    svc: service.AnalysisService | None = getattr(request.app.state, "ai_service", None)
    if svc is None:
        svc = service.AnalysisService(res.pool, res.redis, config.AISettings())
        request.app.state.ai_service = svc
    return svc


async def shutdown(app: fastapi.FastAPI) -> None:
    """Cancel in-flight analyses and close the SDK client; call from the app's lifespan."""
    svc: service.AnalysisService | None = getattr(app.state, "ai_service", None)
    if svc is not None:
        await svc.aclose()
        app.state.ai_service = None


ServiceDep = Annotated[service.AnalysisService, fastapi.Depends(get_service)]

_ROLES = ("trader", "admin", "service")


async def token_principal(
    res: deps.ResourcesDep,
    credentials: deps.Bearer,
) -> tokens.Principal:
    """``deps.CurrentUser`` without its Redis read: signature, claims and role only.

    Only for ``POST /ai/analyze``, whose service checks the session in the Redis round trip
    it makes anyway (:meth:`service.AnalysisService.submit`): a revoked session is refused
    the same way, with one round trip less on every request.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthenticated()
    principal = tokens.decode(credentials.credentials, res.keys.public_pem, res.token_config)
    if not principal.has_role(*_ROLES):
        raise errors.Forbidden(f"requires role: {' or '.join(_ROLES)}", code="forbidden")
    return principal


token_principal.required_roles = _ROLES  # type: ignore[attr-defined]


class AnalysisPublic(schemas.ResponseModel):
    id: str
    status: str
    channel: str
    kind: str
    symbols: list[str]
    question: str | None
    horizon: str
    source: str | None
    label: str | None
    """Set when the offline analyst answered, so no client mistakes it for the model."""
    cached: bool
    model: str | None
    result: dict[str, Any] | None
    checks: dict[str, Any] | None
    fallback_reason: str | None
    error_code: str | None
    created_at: dt.datetime
    completed_at: dt.datetime | None


class AnalysisPage(schemas.ResponseModel):
    items: list[AnalysisPublic]
    limit: int
    offset: int


def _public(row: Any) -> AnalysisPublic:
    rid = str(row["id"])
    return AnalysisPublic(
        id=rid,
        status=row["status"],
        channel=service.channel(rid),
        kind=row["kind"],
        symbols=list(row["symbols"]),
        question=row["question"],
        horizon=row["horizon"],
        source=row["source"],
        label=offline.LABEL if row["source"] == "offline" else None,
        cached=row["cached"],
        model=row["model"],
        result=row["result"],
        checks=row["checks"],
        fallback_reason=row["fallback_reason"],
        error_code=row["error_code"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


_COLUMNS = """id, status, kind, symbols, question, horizon, source, cached, model, result,
              checks, fallback_reason, error_code, created_at, completed_at"""


@router.post("/analyze", status_code=202)
async def analyze(
    body: models.AnalyzeRequest,
    principal: Annotated[tokens.Principal, fastapi.Depends(token_principal)],
    svc: ServiceDep,
) -> AnalysisPublic:
    """Accepted at once: the answer streams on ``channel`` and is fetchable by id.

    A cached answer comes back complete in this response (``status: done``). The response
    is made from what the service already holds: no read-back of the row just written.
    """
    submitted = await svc.submit(principal, body)
    outcome = submitted.outcome or {}
    normalized = submitted.normalized
    return AnalysisPublic(
        id=submitted.id,
        status=submitted.status,
        channel=service.channel(submitted.id),
        kind=normalized.kind,
        symbols=list(normalized.symbols),
        question=normalized.question,
        horizon=normalized.horizon,
        source=outcome.get("source"),
        label=outcome.get("label"),
        cached=submitted.cached,
        model=outcome.get("model"),
        result=outcome.get("result"),
        checks=outcome.get("checks"),
        fallback_reason=outcome.get("fallback_reason"),
        error_code=None,
        created_at=submitted.created_at,
        completed_at=submitted.completed_at,
    )


@router.get("/analyses/{analysis_id}")
async def get_analysis(
    analysis_id: uuid.UUID, user: deps.CurrentUser, pool: deps.DbDep
) -> AnalysisPublic:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS}, user_id FROM ai_analyses WHERE id = $1", analysis_id
    )
    # Someone else's analysis is reported as missing, not forbidden: ids are not disclosed.
    if row is None or (str(row["user_id"]) != user.user_id and not user.has_role("admin")):
        raise errors.NotFound("no such analysis", code="analysis_not_found")
    return _public(row)


@router.get("/analyses")
async def list_analyses(
    user: deps.CurrentUser,
    pool: deps.DbDep,
    limit: Annotated[int, pydantic.Field(ge=1, le=100)] = 20,
    offset: Annotated[int, pydantic.Field(ge=0, le=10_000)] = 0,
) -> AnalysisPage:
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM ai_analyses WHERE user_id = $1
            ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3""",
        uuid.UUID(user.user_id),
        limit,
        offset,
    )
    return AnalysisPage(items=[_public(r) for r in rows], limit=limit, offset=offset)
