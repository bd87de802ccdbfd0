"""What every step and command shares at run time: user errors, local-or-remote file I/O, the
step boundary (errors, progress lines, timings), time budgets and Markdown reports."""
