"""`rayrag serve`: a model behind an HTTP API and a page, on Ray Serve.

    options.py   `ServeOptions`, the verb's flags
    requests.py  what a request may say: `parse_ask` turns a body into an `AskRequest` or a `BadRequest` (4xx)
    app.py       the two deployments: `Frontend` (HTTP, validation, errors) and `Generator` (the model, batched)
    server.py    start Ray and Serve, deploy, wait for a signal, shut everything down
    load.py      `rayrag bench serve`: a bounded load test against a running server
    static/      the page served at `/`

Ray Serve is imported only by app.py and server.py, so the rest loads without it.
"""
