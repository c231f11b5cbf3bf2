"""Stage 1: what the user deploys: the model file loaded (``load``), the project's settings
(``project``) and the reference outputs the board's answers are checked against (``reference``).
"""
