"""Stage 3: what travels to a board: the variants' files with their manifest (``bundle``)
and the board agent as one zipapp (``agent_package``).
"""
