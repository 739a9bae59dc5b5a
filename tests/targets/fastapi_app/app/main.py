"""The Notes API: OAuth2 password login, notes per user, an API-key admin endpoint, two roles.

`APP_PLANTED_BOLA=1` plants a broken object-level authorisation: any user reads any user's note.
`APP_PLANTED_DATE_500=1` plants a server error on a malformed field: `GET /notes/day/?day=…` parses its date
by hand and lets a malformed one raise (HTTP 500 instead of 400). `APP_REQUEST_LOG=FILE` appends every
request's method and path to FILE (the tests prove what a probe sent)."""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel
from sqlalchemy import text
from sqlmodel import Session, create_engine, select

from app.models import Note, NoteIn, User
from app.security import make_token, read_token, verify_password
from app.settings import get_settings

app = FastAPI(title="Notes API")
oauth2 = OAuth2PasswordBearer(tokenUrl="/token")


@app.middleware("http")
async def request_log(request: Request, call_next):
    log = os.environ.get("APP_REQUEST_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{request.method} {request.url.path}\n")
    return await call_next(request)


@lru_cache
def engine():
    return create_engine(get_settings().database_url, pool_pre_ping=True)


def session():
    with Session(engine()) as s:
        yield s


DB = Annotated[Session, Depends(session)]


def current_user(db: DB, token: Annotated[str, Depends(oauth2)]) -> User:
    username = read_token(get_settings().secret, token)
    user = db.exec(select(User).where(User.username == username)).first() if username else None
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
    key = get_settings().admin_api_key
    if not key or x_api_key != key:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin API key required")


@app.get("/health")
def health(db: DB) -> dict:
    db.execute(text("SELECT 1"))
    return {"status": "ok"}


@app.get("/api/version/")
def version() -> dict:
    s = get_settings()
    return {"name": "notes-api", "version": s.version, "build": {"commit": s.commit}}


@app.get("/admin/flags/")
def flags() -> dict:
    """The release freeze as the operators set it (APP_FREEZE=1): writes paused, background jobs paused."""
    frozen = get_settings().freeze
    return {"maintenance_freeze": frozen, "background_jobs": "paused" if frozen else "running"}


@app.post("/token")
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], db: DB) -> dict:
    user = db.exec(select(User).where(User.username == form.username)).first()
    if user is None or not verify_password(form.password, user.password_hash):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    ttl = get_settings().token_ttl_s
    return {"access_token": make_token(get_settings().secret, user.username, ttl), "token_type": "bearer",
            "expires_in": ttl}


@app.get("/users/me/")
def me(user: CurrentUser) -> dict:
    return {"username": user.username, "role": user.role}


@app.get("/notes/")
def list_notes(user: CurrentUser, db: DB) -> list[dict]:
    return [{"id": n.id, "body": n.body} for n in db.exec(select(Note).where(Note.owner_id == user.id))]


@app.post("/notes/", status_code=201)
def create_note(note: NoteIn, user: CurrentUser, db: DB) -> dict:
    row = Note(owner_id=user.id, body=note.body)
    db.add(row)
    db.commit()
    db.refresh(row)
    return {"id": row.id, "body": row.body}


class Day(BaseModel):
    day: str
    weekday: int


def parse_day(day: str) -> date:
    """`day` is declared a plain string and parsed by hand, as many services do."""
    if get_settings().planted_date_500:
        return date.fromisoformat(day)  # the planted defect: a malformed date raises, HTTP 500
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "day must be a date, YYYY-MM-DD") from None


@app.get("/notes/day/")
def notes_day(user: CurrentUser, day: str) -> Day:
    """The day view of the user's notes: the date and its weekday (ISO, Monday 1)."""
    parsed = parse_day(day)
    return Day(day=parsed.isoformat(), weekday=parsed.isoweekday())


@app.get("/notes/{note_id}/")
def read_note(note_id: int, user: CurrentUser, db: DB) -> dict:
    row = db.get(Note, note_id)
    owner_only = not get_settings().planted_bola  # the planted defect: any user reads any note
    if row is None or (owner_only and row.owner_id != user.id and user.role != "admin"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such note")
    return {"id": row.id, "body": row.body}


@app.get("/admin/users/")
def admin_users(user: CurrentUser, db: DB) -> list[dict]:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    return [{"username": u.username, "role": u.role} for u in db.exec(select(User))]


@app.get("/admin/stats/", dependencies=[Depends(admin_key)])
def admin_stats(db: DB) -> dict:
    return {"users": db.execute(text("SELECT count(*) FROM app_user")).scalar(),
            "notes": db.execute(text("SELECT count(*) FROM note")).scalar()}
