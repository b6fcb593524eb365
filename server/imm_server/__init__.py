"""The local IMM server: a stand-in for Alibaba Cloud IMM (API 2020-09-30) that
answers all 105 actions, for imm's tests and for users' tests of any IMM client.
Standard library only.  Where each concern lives:

    signing.py      V3 (SHA-256, SM3) and V2 signatures, the nonce cache, --check-vectors
    validation.py   every request against the API description (api/imm-2020-09-30.json)
    state.py        the store: projects, datasets, bindings, and the collections of the rest
    projects.py, bindings.py, attachments.py, tasks.py, triggers.py, batches.py,
    stories.py, figures.py, filemeta.py   one module per resource family
    analysis.py     the actions without state: documented-shape replies
    actions.py      which module answers which action
    control.py      the /_imm/ control API: faults, canned replies, task outcomes, ...
    faults.py       the fault rules;  notify.py  task notifications
    http.py         the handler and the server;  __main__.py  the command line
"""
