"""Who is using TAC Studio, and whether this server may serve anyone at all.

The router (``ui/navigation.py``) asks :func:`problem` and :func:`signed_in` before any page runs; when either
says no, every address shows only :func:`refusal_page`: no workspace name, no image, no thumbnail.

- **Exposed without sign-in.** Streamlit listens on ``server.address`` (``.streamlit/config.toml`` sets
  ``127.0.0.1``; ``--server.address`` or ``STREAMLIT_SERVER_ADDRESS`` override it). Listening on anything but
  a loopback address with ``TAC_STUDIO_AUTH=local`` would let anyone on the network act as the local user, so
  the app then shows only a message naming the setting to add.
- ``local``: the operating-system user, or the name they typed once (remembered in the data folder: local
  mode is one person on this machine).
- ``proxy``: the user name in the header ``TAC_STUDIO_USER_HEADER`` (default ``X-Forwarded-User``) of the
  request that opened the session, the e-mail in ``TAC_STUDIO_EMAIL_HEADER`` when set. A header sent twice
  (a client's copy next to the proxy's) counts as none. With ``TAC_STUDIO_PROXY_SECRET`` set, a request must
  also carry that secret in ``X-Tac-Studio-Proxy-Secret`` (which only the proxy adds), so a request that
  bypassed the proxy is refused even from this machine.
- ``oidc``: Streamlit's ``st.login`` / ``st.user`` with the provider in ``.streamlit/secrets.toml``; the user
  name is the claim ``TAC_STUDIO_OIDC_USER_CLAIM`` (default ``email``; an e-mail the provider marks as not
  verified is refused).
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
from typing import Optional

import streamlit as st

from tac_core import atomic
from tac_core.errors import InvalidInputError
from tac_core.workspace.access import AUTH_ENV, User, auth_mode, local_user
from tac_core.workspace.workspace import data_dir
from ui.safe_text import esc

LOG = logging.getLogger("tac_studio")
USER_HEADER_ENV = "TAC_STUDIO_USER_HEADER"
EMAIL_HEADER_ENV = "TAC_STUDIO_EMAIL_HEADER"
PROXY_SECRET_ENV = "TAC_STUDIO_PROXY_SECRET"
PROXY_SECRET_HEADER = "X-Tac-Studio-Proxy-Secret"
SIGN_OUT_URL_ENV = "TAC_STUDIO_SIGN_OUT_URL"
OIDC_CLAIM_ENV = "TAC_STUDIO_OIDC_USER_CLAIM"
OIDC_PROVIDER_ENV = "TAC_STUDIO_OIDC_PROVIDER"
DEFAULT_USER_HEADER = "X-Forwarded-User"
LOCAL_NAME_FILE = "local_user.json"
_USER_KEY = "tac_signed_in_user"
_SESSION_KEY = "review_session_token"
_LOGIN_TRIED = "tac_login_tried"


# -- the server ----------------------------------------------------------------------------------------------
def bind_address() -> str:
    """The address Streamlit listens on ("" means every interface, Streamlit's own default)."""
    return str(st.get_option("server.address") or "").strip()


def is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every interface), a host name, a LAN address


def problem() -> str:
    """Why this server must serve nobody (a setting to fix), or ""."""
    try:
        mode = auth_mode()
    except InvalidInputError as exc:
        return str(exc)
    address = bind_address()
    if mode == "local" and not is_loopback(address):
        return (f"TAC Studio listens on {address or 'every network interface'}, so other machines can reach it, but "
                f"nobody signs in ({AUTH_ENV} is local). Add the setting {AUTH_ENV}=proxy or {AUTH_ENV}=oidc (see the "
                "README, Deploying on a shared server), or let it listen on 127.0.0.1 only, then restart TAC Studio.")
    return ""


# -- who the user is -------------------------------------------------------------------------------------------
def signed_in() -> Optional[User]:
    """The user of this browser session by the rules above, or None (not signed in); remembered for :func:`user`."""
    mode = auth_mode()
    found = _local() if mode == "local" else _proxy() if mode == "proxy" else _oidc()
    st.session_state[_USER_KEY] = found
    return found


def user() -> Optional[User]:
    """The user :func:`signed_in` found for this script run."""
    return st.session_state.get(_USER_KEY)


def session_id() -> str:
    """A random id for this browser session, stored with each decision it records."""
    if _SESSION_KEY not in st.session_state:
        st.session_state[_SESSION_KEY] = secrets.token_hex(6)
    return st.session_state[_SESSION_KEY]


def _saved_local() -> Optional[User]:
    try:
        saved = json.loads((data_dir() / LOCAL_NAME_FILE).read_text(encoding="utf-8"))
        return User(saved["name"], saved.get("email", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _local() -> User:
    return _saved_local() or local_user()


def set_local_name(name: str, email: str = "") -> User:
    """Remember the name (and e-mail) the local user typed, for every later visit."""
    chosen = User(name, email)
    data_dir().mkdir(parents=True, exist_ok=True)
    atomic.write_json(data_dir() / LOCAL_NAME_FILE, {"name": chosen.name, "email": chosen.email})
    return chosen


def _single_header(name: str) -> str:
    values = st.context.headers.get_all(name)
    return values[0].strip() if len(values) == 1 else ""


def _proxy() -> Optional[User]:
    secret = os.environ.get(PROXY_SECRET_ENV, "")
    if secret and not hmac.compare_digest(_single_header(PROXY_SECRET_HEADER).encode(), secret.encode()):
        return None
    name = _single_header(os.environ.get(USER_HEADER_ENV, "").strip() or DEFAULT_USER_HEADER)
    email_header = os.environ.get(EMAIL_HEADER_ENV, "").strip()
    try:
        return User(name, _single_header(email_header) if email_header else "") if name else None
    except InvalidInputError:
        LOG.warning("refused a user name from the proxy header that is not a valid name")
        return None


def _oidc() -> Optional[User]:
    if not st.user.is_logged_in:
        return None
    claim = os.environ.get(OIDC_CLAIM_ENV, "").strip() or "email"
    if claim == "email" and st.user.get("email_verified") is False:
        return None
    value, email = st.user.get(claim), st.user.get("email")
    try:
        return User(str(value), str(email or "")) if value else None
    except InvalidInputError:
        return None


# -- what the refused see -------------------------------------------------------------------------------------
def refusal_page(reason: str) -> None:
    """The only thing a request that may not use the app sees: a configuration problem, or how to sign in."""
    if reason:
        st.title("TAC Studio is not available")
        st.error(esc(reason))
        return
    mode = auth_mode()
    st.title("Sign-in required")
    if mode == "proxy":
        st.info("Open TAC Studio through your plant's sign-in page; this address alone does not say who you are.")
        return
    st.info("Sign in with your organisation's account to use TAC Studio.")
    provider = os.environ.get(OIDC_PROVIDER_ENV, "").strip() or None
    if not st.session_state.get(_LOGIN_TRIED):  # straight to the provider once per visit, then a button
        st.session_state[_LOGIN_TRIED] = True
        _login(provider)
    if st.button("Sign in", type="primary"):
        _login(provider)


def _login(provider: Optional[str]) -> None:
    try:
        st.login(provider) if provider else st.login()
    except Exception as exc:  # noqa: BLE001 - a misconfigured provider: say so, no traceback
        LOG.error("sign-in with the OpenID Connect provider failed: %s", exc)
        st.error("Sign-in is not configured correctly on this server (.streamlit/secrets.toml, [auth]); the details "
                 "are in the server log.")


def sidebar() -> None:
    """Who is signed in, and how to change it (local: the name; oidc: sign out; proxy: the proxy's sign-out)."""
    current = user()
    if current is None:
        return
    with st.sidebar:
        st.caption("Signed in as")
        st.text(current.name + (f" <{current.email}>" if current.email else ""))
        mode = auth_mode()
        if mode == "oidc":
            st.button("Sign out", key="tac_sign_out", on_click=st.logout)
        elif mode == "proxy" and os.environ.get(SIGN_OUT_URL_ENV, "").strip():
            st.link_button("Sign out", os.environ[SIGN_OUT_URL_ENV].strip())
        elif mode == "local":
            _local_name_prompt(current)


def _local_name_prompt(current: User) -> None:
    """Asked once (open until a name is saved): the name recorded with every decision; later behind "Not you?"."""
    first = _saved_local() is None
    with st.expander("Your name: recorded with every decision" if first else "Not you?", expanded=first):
        with st.form("tac_local_name", clear_on_submit=True):
            name = st.text_input("Your name", max_chars=200, placeholder=current.name)
            email = st.text_input("E-mail (optional)", max_chars=254)
            if st.form_submit_button("Use this name"):
                try:
                    set_local_name(name.strip() or current.name, email)
                except InvalidInputError as exc:
                    st.error(esc(exc))
                else:
                    st.rerun()
