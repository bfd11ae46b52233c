"""A stand-in for code that runs when a pickle is loaded, for the tests of
checkpoint safety: unpickling a :class:`RunsCode` calls :func:`run_payload`
(no shell involved), which appends to :data:`PAYLOAD_RUNS`. A test that
finds the list empty knows nothing was run."""

#: what :func:`run_payload` was called with, in this process
PAYLOAD_RUNS = []


def run_payload(tag):
    PAYLOAD_RUNS.append(tag)
    return tag


class RunsCode:
    """Unpickling this calls :func:`run_payload`."""

    def __reduce__(self):
        return (run_payload, ('unpickled', ))
