"""The communicator table: the one structure compiled step code reads to reach MPI.

A graph that all-reduces takes an int64 scalar input, `comm`, holding the address of its
communicator's table: an array of int64 words laid out below. Step code (cached on disk and
shared by every process) calls only the two function pointers it finds here, with the
signatures

    i32 start(ptr table, i64 slot, ptr buf, i64 count, i64 dtype, i64 op, i64 graph_hash)
    i32 wait(ptr table, i64 slot)

so it never depends on which MPI library, ABI or handle width this process uses. The
process fills the table when the communicator is created (graphc/distributed/comm.py) with
functions compiled for its MPI (codegen/collective.py) or with ctypes callbacks into mpi4py.
This module holds only the layout, so codegen can import it without importing MPI.
"""

from __future__ import annotations

MAGIC = 0x6772617068630001  # "graphc" + layout version 1: recognisable in a memory dump

W_MAGIC = 0
W_START = 1  # start(...) above
W_WAIT = 2  # wait(...) above
W_CHECK = 3  # i32 check(ptr table, i64 graph_hash): the cross-rank graph comparison
W_LAST_HASH = 4  # the graph hash the ranks last agreed on (0: none yet)
W_COMM = 5  # MPI handles, widened to 64 bits
W_IN_PLACE = 6
W_DTYPE = 8  # + DTYPE_CODES[dtype]
W_OP = 12  # + OP_CODES[op]
W_STATUS = 16  # 16 words of scratch for an MPI_Status
W_REQUEST = 32  # + slot: one MPI_Request per all-reduce in flight
MAX_REQUESTS = 256
WORDS = W_REQUEST + MAX_REQUESTS

DTYPE_CODES = {"float32": 0, "float64": 1, "int64": 2, "int32": 3}
OP_CODES = {"sum": 0, "max": 1, "min": 2}
