"""``corral bench volume``: sequential and random I/O on a volume, throttle detection, fio comparison.

Modules: ``plan`` (pure: what to run, fio argv), ``engine`` (threads issuing pread/pwrite),
``target`` (the PATH checks, the private work directory and its cleanup), ``fio`` (the fio choke
point and its JSON parser), ``report`` (result records, table, plot), ``cluster`` (every node at
once through the launch API), ``worker`` (the entry point a node runs).
"""
