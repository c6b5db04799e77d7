"""The application layer: use cases (one transaction each), the sweep, the journal and
the outbox, between the pure domain and the front ends."""
