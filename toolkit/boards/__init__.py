"""Stage 4: the boards: target files, one interface for this machine and SSH boards, uploads,
the lease that gives one job a board, labs, set-up, wheels and ``edge doctor``.
"""
