"""Stage 6: one typed record per target x variant (``record``, its JSON shapes typed in
``facts``), the store that keeps them (``store``, with its ``schema``, its two ``database``
engines, and runs exported and imported by ``export``) and the choice of the variant to ship
(``choose``).
"""
