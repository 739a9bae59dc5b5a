"""`target.auth`: the named principals a rehearsal acts as, each with its scheme (docs/params.md, "Principals").

Secrets (tokens, keys, passwords, client secrets) are `${VAR}` references only, resolved inside the kernel
(`PhaseRun.resolve`) so that they and every token obtained with them are masked in all outputs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from rehearsal_lib.params_base import REF_RE, JourneyStep, Strict

ANONYMOUS = "anonymous"
PRINCIPAL_NAME = r"^[a-z][a-z0-9_]{0,63}$"


def _reference(value: str | None) -> str | None:
    if value is not None and not REF_RE.search(value):
        raise ValueError("write secrets as a ${VAR} reference resolved from the environment, not inline")
    return value


class BearerScheme(Strict):
    """A fixed token sent as `Authorization: Bearer <token>`."""

    scheme: Literal["bearer"]
    token: str = Field(description="A ${VAR} reference.")

    @field_validator("token")
    @classmethod
    def _ref(cls, value: str) -> str | None:
        return _reference(value)


class ApiKeyScheme(Strict):
    """A key sent in a header (default `X-API-Key`) or a query parameter."""

    scheme: Literal["api_key"]
    key: str = Field(description="A ${VAR} reference.")
    header: str | None = Field(None, description="Header carrying the key; default X-API-Key when `query` is unset.")
    query: str | None = Field(None, description="Query parameter carrying the key instead of a header.")

    @field_validator("key")
    @classmethod
    def _ref(cls, value: str) -> str | None:
        return _reference(value)

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyScheme:
        if self.header and self.query:
            raise ValueError("an API key goes in a `header` or a `query` parameter, not both")
        if not self.query and not self.header:
            self.header = "X-API-Key"
        return self


class BasicScheme(Strict):
    """HTTP basic authentication."""

    scheme: Literal["basic"]
    username: str
    password: str = Field(description="A ${VAR} reference.")

    @field_validator("password")
    @classmethod
    def _ref(cls, value: str) -> str | None:
        return _reference(value)


class _TokenGrant(Strict):
    token_url: str = Field(description="Path (or URL) of the token endpoint; the form is POSTed there.")
    token_path: str = Field("access_token", description="Dotted path of the token in the JSON answer.")
    expires_path: str | None = Field("expires_in", description="Dotted path of its lifetime in seconds (if sent).")
    scope: str | None = None
    extra: dict[str, str] = Field(default_factory=dict, description="More form fields sent with the grant.")


class OAuth2PasswordScheme(_TokenGrant):
    """OAuth2 password grant: a form-encoded login; refreshed when it expires, or once on a 401."""

    scheme: Literal["oauth2_password"]
    username: str
    password: str = Field(description="A ${VAR} reference.")
    client_id: str | None = None
    client_secret: str | None = Field(None, description="A ${VAR} reference, when the token endpoint wants one.")

    @field_validator("password", "client_secret")
    @classmethod
    def _refs(cls, value: str | None) -> str | None:
        return _reference(value)


class OAuth2ClientCredentialsScheme(_TokenGrant):
    """OAuth2 client credentials grant (sent in the form, or as HTTP basic with `client_auth: basic`)."""

    scheme: Literal["oauth2_client_credentials"]
    client_id: str
    client_secret: str = Field(description="A ${VAR} reference.")
    client_auth: Literal["form", "basic"] = "form"

    @field_validator("client_secret")
    @classmethod
    def _ref(cls, value: str) -> str | None:
        return _reference(value)


class JourneyScheme(Strict):
    """Login steps (journey steps, run anonymously unless they say `as`); the saved value `token` is the
    credential, sent in `header` with `prefix` (default `Authorization: Bearer <value>`)."""

    scheme: Literal["journey"]
    steps: list[JourneyStep] = Field(min_length=1)
    token: str = Field(description="The saved name (a step's `save`) that becomes the token.")
    header: str = "Authorization"
    prefix: str = "Bearer "

    @model_validator(mode="after")
    def _token_saved(self) -> JourneyScheme:
        saved = {name for step in self.steps for name in step.save}
        if self.token not in saved:
            raise ValueError(f"token {self.token!r} is not saved by any step (saved: {sorted(saved) or 'none'})")
        return self


def _scheme_of(value: Any) -> str | None:
    scheme = value.get("scheme") if isinstance(value, dict) else getattr(value, "scheme", None)
    return scheme if isinstance(scheme, str) else None


Principal = Annotated[Annotated[BearerScheme, Tag("bearer")] | Annotated[ApiKeyScheme, Tag("api_key")]
                      | Annotated[BasicScheme, Tag("basic")] | Annotated[OAuth2PasswordScheme, Tag("oauth2_password")]
                      | Annotated[OAuth2ClientCredentialsScheme, Tag("oauth2_client_credentials")]
                      | Annotated[JourneyScheme, Tag("journey")],
                      Discriminator(_scheme_of, custom_error_type="scheme",
                                    custom_error_message="`scheme` must be one of bearer, api_key, basic, "
                                                         "oauth2_password, oauth2_client_credentials, journey")]


class AuthBlock(Strict):
    """Named principals; `default` is the one a request runs as when it names none."""

    default: str | None = Field(None, description="Default principal; else `default` from auth_token, else the "
                                                  "only principal, else anonymous.")
    principals: dict[str, Principal] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid")

    @field_validator("principals")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(PRINCIPAL_NAME, name) or name == ANONYMOUS:
                raise ValueError(f"principal name {name!r}: lower-case letters, digits and '_', not '{ANONYMOUS}'")
        return value
