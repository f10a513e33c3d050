"""What a command leaves on disk: the names of every file and folder an output holds (`layout`), writing
them safely (`publishing`: the ownership marker, staging and the atomic rename, the lock), reading them
back as objects (`artifacts`: `Run`, `Export`, `Comparison`, ...), and the PNG figures, drawn from
arrays and tables (`figures`). Imports `transfer.core` and `transfer.metrics`; no model code.
"""
