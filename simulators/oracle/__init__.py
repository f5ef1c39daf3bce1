"""An Oracle database double for the real python-oracledb driver code.

`client.connect` stands in for `oracledb.connect`; the instance keeps its control file,
datafiles and online redo on EVA LUNs through a host's SAN port (`media`), archived logs
on the host's filesystem; `build.create_database` makes one, `workload.Workload` commits
numbered transactions into it.
"""
