"""Stage 6: one typed record per target x variant (``record``), the store that keeps them
(``store``) and the choice of the variant to ship (``choose``).
"""
