"""``corral bench cluster``: accept a whole cluster in one command: the node, network, all-reduce and volume
benchmarks one after another, judged against the spec, the cloud's documented limits and the nodes' peers,
localized to a node or a link, and reported (report.json, report.md, report.html, junit.xml)."""
