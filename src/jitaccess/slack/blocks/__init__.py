"""Block Kit for every message, modal and home tab the app shows, one module per kind:
:mod:`.cards` (messages), :mod:`.modals`, :mod:`.home` (App Home and request lists),
:mod:`.markup` (escaping and the other text helpers all of them share) and :mod:`.ids`
(the callback and action ids the listeners route on). Import from the module."""
