"""`tailor serve`: an OpenAI-compatible HTTP API and a chat page for a run's model.

    app.py        routes, auth, limits, streaming (server-sent events)
    engine.py     the batching scheduler that runs generation
    schemas.py    request bodies
    static/       the chat page served at /
"""
