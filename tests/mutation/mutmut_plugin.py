"""pytest plugin for mutation runs only (setup.cfg [mutmut] pytest_add_cli_args loads it).

mutmut calls every mutated function through its trampoline, a frame in
`mutmut.mutation.trampoline`; the commit guard names the first frame outside its plumbing as
the caller of a refused statement, so without this it would name the trampoline instead of
the test or driver that tests expect to see named.
"""
from hoc_drivers import commit_guard

commit_guard._PLUMBING_MODULES = commit_guard._PLUMBING_MODULES | {"mutmut.mutation.trampoline"}
