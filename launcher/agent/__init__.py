"""The node agent: corral's one way of asking a node anything over ssh (no corral install on the node).

``node_agent.py`` runs on the node (standard library only, sent on ssh's stdin); ``remote.py``
keeps one agent session per node on this side. The ssh + tmux backend, the container runtime,
``corral top`` and ``bench node`` all reach nodes through it.
"""
