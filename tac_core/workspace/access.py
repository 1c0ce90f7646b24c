"""Who is using a workspace and what they may do: users, roles, members, and the one check every change goes
through.

A :class:`User` is a name (what every recorded decision keeps) and an optional e-mail. Each workspace has
*members*, each with one role; a role allows everything the roles below it allow:

========== ===========================================================================================
viewer     see the workspace (images, runs, reviews, history) and export labels
reviewer   also add images by upload, change vocabulary sets, start / re-run / cancel runs,
           edit the review and decide audit items (undo and redo their own edits only)
approver   also sign off clusters and undo or redo other people's edits
admin      also add and remove members, add folders of the server by path, change the workspace's
           settings (where its images are computed), rename and delete
========== ===========================================================================================

Every engine entry point that changes data calls :meth:`AccessMixin.require` with the action it performs
(:data:`ACTIONS`), which raises :class:`AccessDeniedError` naming the role needed. A :class:`Workspace` handle
acts for one user (``workspace.as_user(user)``; handles share the database connections), so the front end
names the user once and every call made through the handle is checked and recorded under that name.

**Who the user is** depends on how TAC Studio is served, ``TAC_STUDIO_AUTH`` (:func:`auth_mode`):
``local`` (default: one person on this machine; the engine's default user is the operating-system user),
``proxy`` (a single-sign-on proxy names the user) or ``oidc`` (an OpenID Connect provider does). In ``proxy``
and ``oidc`` mode the engine has no default user: a call that was not given one is refused.

**A workspace without members** (made by TAC Studio 0.1, before members existed) is *unclaimed*. In ``local``
mode every user acts as its admin, as before; nothing is recorded as a membership until an admin adds one. In
``proxy`` and ``oidc`` mode nobody may see or change it, except that a server admin named in
``TAC_STUDIO_ADMINS`` may *claim* it (:meth:`AccessMixin.claim`), which makes them its admin and is recorded;
from then on the ordinary rules hold. So serving old workspaces to a network never opens them to everyone, and
nobody can claim a workspace that already has members. A workspace always keeps at least one admin.
"""
from __future__ import annotations

import enum
import getpass
import os
import threading
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from ..errors import InvalidInputError, TacError
from .store import utc_now, validate_name

AUTH_ENV = "TAC_STUDIO_AUTH"
ADMINS_ENV = "TAC_STUDIO_ADMINS"
AUTH_MODES = ("local", "proxy", "oidc")
MAX_USER_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
UNKNOWN = "unknown"  # how a decision recorded before users existed reads


class AccessDeniedError(TacError):
    """The user may not do this in this workspace (or nobody is signed in); the message names the role needed."""


class Role(enum.IntEnum):
    """A member's role; a higher role allows everything a lower one does."""

    VIEWER = 1
    REVIEWER = 2
    APPROVER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: "Role | str") -> "Role":
        if isinstance(value, Role):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise InvalidInputError(f"role {value!r} is not one of {', '.join(r.label for r in cls)}.") from None


#: action -> (the lowest role allowed to do it, how a message names it)
ACTIONS: dict[str, tuple[Role, str]] = {
    "view": (Role.VIEWER, "open this workspace"),
    "export": (Role.VIEWER, "export labels"),
    "add_images": (Role.REVIEWER, "add images"),
    "metadata": (Role.REVIEWER, "change image metadata"),
    "vocabulary": (Role.REVIEWER, "change vocabulary sets"),
    "run": (Role.REVIEWER, "start, re-run or cancel runs"),
    "edit": (Role.REVIEWER, "edit the review"),
    "undo_others": (Role.APPROVER, "undo or redo another person's edit"),
    "sign_off": (Role.APPROVER, "sign off clusters"),
    "add_server_folder": (Role.ADMIN, "add a folder of the server by its path"),
    "members": (Role.ADMIN, "add or remove members"),
    "settings": (Role.ADMIN, "change the workspace's settings"),
    "rename": (Role.ADMIN, "rename the workspace"),
    "delete": (Role.ADMIN, "delete the workspace"),
}


@dataclass(frozen=True)
class User:
    """A person: ``name`` is what every recorded decision keeps; ``email`` is recorded too when known."""

    name: str
    email: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_name(self.name, "user name", MAX_USER_NAME_LENGTH))
        email = "" if self.email is None else self.email
        object.__setattr__(self, "email", validate_name(email, "e-mail address", MAX_EMAIL_LENGTH) if
                           str(email).strip() else "")

    @property
    def key(self) -> str:
        """The name as members are matched: Unicode-normalised (NFKC) and case-folded, so "Alice" is "alice"."""
        return user_key(self.name)

    def __str__(self) -> str:
        return self.name


def user_key(name: str) -> str:
    return unicodedata.normalize("NFKC", name.strip()).casefold()


# -- the server's settings ------------------------------------------------------------------------------
def auth_mode() -> str:
    """``TAC_STUDIO_AUTH``: ``local`` (default), ``proxy`` or ``oidc``; any other value is refused."""
    mode = os.environ.get(AUTH_ENV, "").strip().lower() or "local"
    if mode not in AUTH_MODES:
        raise InvalidInputError(f"{AUTH_ENV}={os.environ.get(AUTH_ENV)!r} is not one of {', '.join(AUTH_MODES)}; "
                                "fix the setting and restart TAC Studio.")
    return mode


def served_to_network() -> bool:
    """Whether other machines reach this TAC Studio: its users sign in (``proxy`` or ``oidc``)."""
    return auth_mode() != "local"


def server_admins() -> frozenset[str]:
    """The user keys named in ``TAC_STUDIO_ADMINS`` (comma-separated): who may claim an unclaimed workspace."""
    return frozenset(user_key(part) for part in os.environ.get(ADMINS_ENV, "").split(",") if part.strip())


def is_server_admin(user: Optional[User]) -> bool:
    return user is not None and user.key in server_admins()


def local_user() -> User:
    """The operating-system user running TAC Studio."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no user database entry (some containers)
        name = ""
    return User(name.strip() or "local user")


def default_user() -> Optional[User]:
    """Who acts when a caller names nobody: the OS user in ``local`` mode; nobody when users sign in."""
    return local_user() if auth_mode() == "local" else None


# -- the check and the members of a workspace --------------------------------------------------------------
class AccessMixin:
    """Members, roles and the access check of :class:`tac_core.workspace.workspace.Workspace`."""

    user: Optional[User]
    session: str

    def _init_access(self, user: Optional[User], session: str = "") -> None:
        self.user = default_user() if user is None else user
        self.session = session
        self._handles: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._handles_lock = threading.Lock()

    def as_user(self, user: Optional[User], session: str = "") -> "AccessMixin":
        """This workspace acting for ``user`` (``session`` is stored with what they record). Handles share the
        database connections and are kept while used, so asking again returns the same object."""
        with self._handles_lock:
            handle = self._handles.get((user, session))
            if handle is None:
                handle = object.__new__(type(self))
                handle.__dict__.update(self.__dict__)
                handle.user, handle.session = user, session
                self._handles[(user, session)] = handle
        return handle

    def members(self) -> pd.DataFrame:
        """name, email, role, added, added_by of every member, the highest role first, then by name."""
        frame = self._frame("SELECT name, email, role, added, added_by FROM members ORDER BY key")
        rank = [-Role.parse(role).value for role in frame["role"]]
        return frame.iloc[sorted(range(len(frame)), key=rank.__getitem__)].reset_index(drop=True)

    @property
    def claimed(self) -> bool:
        """Whether the workspace has members (see the module docstring for one that has none)."""
        return self.connection().execute("SELECT 1 FROM members LIMIT 1").fetchone() is not None

    def role_of(self, user: Optional[User] = None, conn=None) -> Optional[Role]:
        """The user's role here (default: this handle's user), or None when they may not even see it."""
        user = self.user if user is None else user
        if user is None:
            return None
        conn = conn or self.connection()
        row = conn.execute("SELECT role FROM members WHERE key = ?", (user.key,)).fetchone()
        has_members = row is not None or conn.execute("SELECT 1 FROM members LIMIT 1").fetchone() is not None
        return resolve_role(row[0] if row else None, has_members)

    def allows(self, action: str, user: Optional[User] = None) -> bool:
        """Whether the user (default: this handle's) may do ``action`` (a key of :data:`ACTIONS`)."""
        role = self.role_of(user)
        return role is not None and role >= _needed(action)

    def require(self, action: str, user: Optional[User] = None, conn=None) -> User:
        """The one access check: returns the user when they may do ``action``, else :class:`AccessDeniedError`.

        Pass the write transaction's ``conn`` to check inside it, so a role taken away meanwhile counts.
        """
        user = self.user if user is None else user
        if user is None:
            raise AccessDeniedError(f"nobody is signed in, and TAC Studio records a name with every decision; sign "
                                    f"in first ({AUTH_ENV}={auth_mode()}).")
        needed = _needed(action)
        role = self.role_of(user, conn)
        if role is not None and role >= needed:
            return user
        doing = ACTIONS[action][1]
        if role is None:
            raise AccessDeniedError(f"{user.name} is not a member of this workspace, so they may not {doing}; ask "
                                    "an admin of the workspace to add them.")
        raise AccessDeniedError(f"{user.name} is a {role.label} of this workspace; to {doing} they need the "
                                f"{needed.label} role or higher. Ask an admin of the workspace to change their role.")

    def add_member(self, name: str, role: Role | str, email: str = "") -> User:
        """Add a member, or change the role (and e-mail) of one; admins only. Returns the member as a User."""
        member, role = User(name, email), Role.parse(role)
        with self.transaction() as conn:
            by = self.require("members", conn=conn)
            old = conn.execute("SELECT role FROM members WHERE key = ?", (member.key,)).fetchone()
            if old is not None and Role.parse(old[0]) == Role.ADMIN and role != Role.ADMIN:
                _keep_an_admin(conn, member)
            conn.execute("INSERT INTO members (key, name, email, role, added, added_by) VALUES (?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET name = excluded.name, email = excluded.email, "
                         "role = excluded.role", (member.key, member.name, member.email, role.label, utc_now(),
                                                  by.name))
            self.record("member added" if old is None else "member changed",
                        {"member": member.name, "role": role.label}, conn=conn)
        return member

    def remove_member(self, name: str) -> None:
        """Remove a member by user name; admins only, and never the last admin."""
        key = user_key(name)
        with self.transaction() as conn:
            self.require("members", conn=conn)
            row = conn.execute("SELECT name, role FROM members WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise InvalidInputError(f"{name!r} is not a member of this workspace.")
            if Role.parse(row[1]) == Role.ADMIN:
                _keep_an_admin(conn, User(row[0]))
            conn.execute("DELETE FROM members WHERE key = ?", (key,))
            self.record("member removed", {"member": row[0]}, conn=conn)

    def claim(self, user: Optional[User] = None) -> None:
        """Make ``user`` (default: this handle's) the admin of an unclaimed workspace.

        Allowed in ``local`` mode for anyone, otherwise only for a server admin (``TAC_STUDIO_ADMINS``); a
        workspace that has members cannot be claimed.
        """
        user = self.user if user is None else user
        if user is None:
            raise AccessDeniedError("nobody is signed in; sign in to claim a workspace.")
        if auth_mode() != "local" and not is_server_admin(user):
            raise AccessDeniedError(f"only a server admin (named in {ADMINS_ENV}) may claim a workspace that has no "
                                    f"members; {user.name} is not one.")
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM members LIMIT 1").fetchone() is not None:
                raise AccessDeniedError("this workspace already has members, so it cannot be claimed; ask one of "
                                        "its admins to add you.")
            _insert_admin(conn, user, added_by=user.name)
            self.record("claimed", {"member": user.name, "role": Role.ADMIN.label}, user=user, conn=conn)


def resolve_role(member_role: Optional[str], has_members: bool) -> Optional[Role]:
    """A user's role from their member row (None: not a member): the rule for unclaimed workspaces, in one place."""
    if member_role is not None:
        return Role.parse(member_role)
    return Role.ADMIN if not has_members and auth_mode() == "local" else None


def add_creator(conn, user: User) -> None:
    """The creator of a new workspace becomes its admin (inside the transaction that creates it)."""
    _insert_admin(conn, user, added_by=user.name)


def _insert_admin(conn, user: User, added_by: str) -> None:
    conn.execute("INSERT INTO members (key, name, email, role, added, added_by) VALUES (?, ?, ?, 'admin', ?, ?)",
                 (user.key, user.name, user.email, utc_now(), added_by))


def _keep_an_admin(conn, leaving: User) -> None:
    others = conn.execute("SELECT COUNT(*) FROM members WHERE role = 'admin' AND key != ?",
                          (leaving.key,)).fetchone()[0]
    if not others:
        raise InvalidInputError(f"{leaving.name} is the workspace's only admin; make someone else an admin first.")


def _needed(action: str) -> Role:
    try:
        return ACTIONS[action][0]
    except KeyError:
        raise ValueError(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}") from None
