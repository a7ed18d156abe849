"""Integrity of what the server stores: the change log's hash chain, containment, repair and verification.

* ``chain``: links and signed checkpoints of each tenant's change log;
* ``quarantine``: a stored row that fails its check is set aside, not a failure of the tenant;
* ``rebuild``: ``syncserver repair`` rebuilds entity states from the change log;
* ``verify``: ``syncserver verify`` walks the chain and every derived row.
"""
