"""``corral bench net``: ``plan`` (pure pair plan and report), ``peer`` (the stdlib receiver/sender a node
runs), ``run`` (both ends of each pair over the node choke point, one pair at a time)."""
