"""What one command runs in: the service container (built, migrated, closed), the
clock, and the end of the cyclic GC's start-up pause (see :func:`jitaccess.cli.main`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from jitaccess.cli.output import EXIT_REFUSED, EXIT_USAGE, message, print_lines, refuse

# The container (and with it the service, the store and SQLAlchemy) is imported when
# a command enters `container()`, never when the CLI loads.
if TYPE_CHECKING:
    from jitaccess.container import Container


def now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def container() -> Iterator[Container]:
    """Build the service for one command; rule refusals become exit code 1."""
    from jitaccess.container import build
    from jitaccess.domain.errors import JitError, Problems
    from jitaccess.providers.base import ProviderError
    from jitaccess.settings import SettingsError

    built: Container | None = None
    try:
        built = build()
        built.db.upgrade()
        end_gc_pause()
        yield built
    except SettingsError as exc:
        print_lines(exc.lines)
        raise typer.Exit(EXIT_USAGE) from None
    except Problems as exc:
        print_lines([f"error: {line}" for line in exc.lines()])
        raise typer.Exit(EXIT_REFUSED) from None
    except (JitError, ProviderError) as exc:
        refuse(message(exc))
    finally:
        if built is not None:
            built.close()


def end_gc_pause() -> None:
    """Start-up is over (see ``main``): hide what it made from the cyclic GC, resume it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
