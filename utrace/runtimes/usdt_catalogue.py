# ruff: noqa: E501  (declarations kept one per line, as in the providers' .d files)
"""Typed signatures of well-known USDT providers, from their DTrace provider (`.d`) files.

A `.note.stapsdt` records each argument's size and where it is (`8@%rax`), never its type, so a
`const char *` would print as a number. These are the probe declarations of the providers' own `.d`
files (parameter names added where the file leaves them out, from the project's documentation), with
where each came from. An entry is used only when the note's argument count and sizes agree with it
(`utrace.runtimes.usdt.typed_args`); a provider that changed a probe has one entry per version.

Strings that HotSpot passes as (pointer, length) pairs, never NUL-terminated, are marked
`counted`: a `char *` followed by an integer is read as exactly that many bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Source:
    """Where a provider's declarations come from: repository, file, commit (or a documentation URL)."""

    where: str
    counted: bool = False  # `char *` followed by its length: a counted string


@dataclass(frozen=True, slots=True)
class Signature:
    provider: str
    name: str
    params: tuple[str, ...]
    source: Source

    @property
    def text(self) -> str:
        return f"{self.name}({', '.join(self.params)})"


POSTGRESQL = Source("postgres/postgres src/backend/utils/probes.d (commit 0239800893ef)")
PYTHON_311 = Source("python/cpython Include/pydtrace.d as of 3.6-3.11 (docs.python.org/3.11/howto/instrumentation)")
PYTHON_MAIN = Source("python/cpython Include/pydtrace.d (commit 19f3abdf45dd)")
NODE = Source("nodejs/node src/node_provider.d (commit 068b733583a4; removed in node 12)")
HOTSPOT = Source("openjdk jdk21u src/hotspot/os/posix/dtrace/hotspot.d (commit 1f79aaf69d37)", counted=True)
LIBC = Source("bminor/glibc manual/probes.texi (commit 4b246928bd7f)")
LIBSTDCXX = Source("gcc libstdc++-v3/libsupc++ eh_throw.cc, eh_catch.cc PROBE2 calls (throw, rethrow, catch)")
MYSQL = Source("MariaDB/server include/probes_mysql.d.base (commit 54449161f8fa)")
RUBY = Source("ruby/ruby probes.d (commit 117b51a3fa02)")

# One `provider` block per source, in the .d files' own syntax (the parser below reads it).
_DECLARATIONS: list[tuple[Source, str]] = [
    (
        POSTGRESQL,
        """provider postgresql {
    probe transaction__start(unsigned int local_xid);
    probe transaction__commit(unsigned int local_xid);
    probe transaction__abort(unsigned int local_xid);
    probe lwlock__acquire(int lwlock, int mode);
    probe lwlock__release(int lwlock);
    probe lwlock__wait__start(int lwlock, int mode);
    probe lwlock__wait__done(int lwlock, int mode);
    probe lwlock__condacquire(int lwlock, int mode);
    probe lwlock__condacquire__fail(int lwlock, int mode);
    probe lock__wait__start(unsigned int field1, unsigned int field2, unsigned int field3, unsigned int field4, unsigned int locktag_type, int mode);
    probe lock__wait__done(unsigned int field1, unsigned int field2, unsigned int field3, unsigned int field4, unsigned int locktag_type, int mode);
    probe query__parse__start(const char *query);
    probe query__parse__done(const char *query);
    probe query__rewrite__start(const char *query);
    probe query__rewrite__done(const char *query);
    probe query__plan__start();
    probe query__plan__done();
    probe query__execute__start();
    probe query__execute__done();
    probe query__start(const char *query);
    probe query__done(const char *query);
    probe statement__status(const char *status);
    probe sort__start(int sort_type, char unique, int nkeys, int work_mem, char random_access);
    probe sort__done(char external, long space_used);
    probe buffer__read__start(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation, char temp, char extend);
    probe buffer__read__done(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation, char temp, char extend, char found);
    probe buffer__flush__start(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation);
    probe buffer__flush__done(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation);
    probe buffer__checkpoint__start(int flags);
    probe buffer__checkpoint__sync__start();
    probe buffer__checkpoint__done();
    probe buffer__sync__start(int nbuffers, int to_write);
    probe buffer__sync__written(int buffer);
    probe buffer__sync__done(int nbuffers, int written, int to_write);
    probe buffer__write__dirty__start(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation);
    probe buffer__write__dirty__done(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation);
    probe deadlock__found();
    probe checkpoint__start(int flags);
    probe checkpoint__done(int buffers_written, int nbuffers, int segs_added, int segs_removed, int segs_recycled);
    probe clog__checkpoint__start(char shutdown);
    probe clog__checkpoint__done(char shutdown);
    probe subtrans__checkpoint__start(char shutdown);
    probe subtrans__checkpoint__done(char shutdown);
    probe multixact__checkpoint__start(char shutdown);
    probe multixact__checkpoint__done(char shutdown);
    probe twophase__checkpoint__start();
    probe twophase__checkpoint__done();
    probe smgr__md__read__start(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation);
    probe smgr__md__read__done(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation, int bytes, int requested);
    probe smgr__md__write__start(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation);
    probe smgr__md__write__done(int fork, unsigned int block, unsigned int tablespace, unsigned int database, unsigned int relation, int bytes, int requested);
    probe xlog__insert(unsigned char rmid, unsigned char info);
    probe xlog__switch();
    probe wal__buffer__write__dirty__start();
    probe wal__buffer__write__dirty__done();
};""",
    ),
    (
        PYTHON_311,
        """provider python {
    probe function__entry(const char *filename, const char *funcname, int lineno);
    probe function__return(const char *filename, const char *funcname, int lineno);
    probe line(const char *filename, const char *funcname, int lineno);
    probe gc__start(int generation);
    probe gc__done(long collected);
    probe instance__new__start(const char *type, const char *name);
    probe instance__new__done(const char *type, const char *name);
    probe instance__delete__start(const char *type, const char *name);
    probe instance__delete__done(const char *type, const char *name);
    probe import__find__load__start(const char *module);
    probe import__find__load__done(const char *module, int found);
    probe audit(const char *event, void *args);
};""",
    ),
    (
        PYTHON_MAIN,
        """provider python {
    probe function__entry(const char *filename, const char *funcname, int lineno, const char *arg3);
    probe function__return(const char *filename, const char *funcname, int lineno, const char *arg3);
    probe cfunction__entry(const char *filename, const char *funcname, int lineno, const char *arg3);
    probe cfunction__return(const char *filename, const char *funcname, int lineno, const char *arg3);
};""",
    ),
    (
        NODE,
        """provider node {
    probe net__server__connection(void *conn);
    probe net__stream__end(void *conn);
    probe http__server__request(void *request, void *conn);
    probe http__server__response(void *conn);
};""",
    ),
    (
        HOTSPOT,
        """provider hotspot {
    probe class__loaded(char *name, uintptr_t name_len, void *loader, uintptr_t shared);
    probe class__unloaded(char *name, uintptr_t name_len, void *loader, uintptr_t shared);
    probe class__initialization__required(char *name, uintptr_t name_len, void *loader, intptr_t thread_type);
    probe class__initialization__recursive(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe class__initialization__concurrent(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe class__initialization__erroneous(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe class__initialization__super__failed(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe class__initialization__clinit(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe class__initialization__error(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe class__initialization__end(char *name, uintptr_t name_len, void *loader, intptr_t thread_type, int wait);
    probe vm__init__begin();
    probe vm__init__end();
    probe vm__shutdown();
    probe vmops__request(char *name, uintptr_t name_len, int mode);
    probe vmops__begin(char *name, uintptr_t name_len, int mode);
    probe vmops__end(char *name, uintptr_t name_len, int mode);
    probe gc__thread__spawn();
    probe gc__thread__work__start();
    probe gc__thread__work__end();
    probe gc__begin(uintptr_t full);
    probe gc__end();
    probe mem__pool__gc__begin(char *manager, uintptr_t manager_len, char *pool, uintptr_t pool_len, uintptr_t initial, uintptr_t used, uintptr_t committed, uintptr_t max);
    probe mem__pool__gc__end(char *manager, uintptr_t manager_len, char *pool, uintptr_t pool_len, uintptr_t initial, uintptr_t used, uintptr_t committed, uintptr_t max);
    probe thread__start(char *name, uintptr_t name_len, uintptr_t java_tid, uintptr_t os_tid, uintptr_t daemon);
    probe thread__stop(char *name, uintptr_t name_len, uintptr_t java_tid, uintptr_t os_tid, uintptr_t daemon);
    probe thread__sleep__begin(long long millis);
    probe thread__sleep__end(int interrupted);
    probe thread__yield();
    probe thread__park__begin(uintptr_t parker, int absolute, long long time);
    probe thread__park__end(uintptr_t parker);
    probe thread__unpark(uintptr_t parker);
    probe method__compile__begin(char *compiler, uintptr_t compiler_len, char *class, uintptr_t class_len, char *method, uintptr_t method_len, char *signature, uintptr_t signature_len);
    probe method__compile__end(char *compiler, uintptr_t compiler_len, char *class, uintptr_t class_len, char *method, uintptr_t method_len, char *signature, uintptr_t signature_len, uintptr_t success);
    probe compiled__method__load(char *class, uintptr_t class_len, char *method, uintptr_t method_len, char *signature, uintptr_t signature_len, void *code, uintptr_t size);
    probe compiled__method__unload(char *class, uintptr_t class_len, char *method, uintptr_t method_len, char *signature, uintptr_t signature_len);
    probe monitor__contended__enter(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len);
    probe monitor__contended__entered(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len);
    probe monitor__contended__exit(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len);
    probe monitor__wait(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len, uintptr_t timeout);
    probe monitor__waited(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len);
    probe monitor__notify(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len);
    probe monitor__notifyAll(uintptr_t java_tid, uintptr_t monitor, char *class, uintptr_t class_len);
    probe object__alloc(int java_tid, char *class, uintptr_t class_len, uintptr_t size);
    probe method__entry(int java_tid, char *class, int class_len, char *method, int method_len, char *signature, int signature_len);
    probe method__return(int java_tid, char *class, int class_len, char *method, int method_len, char *signature, int signature_len);
};""",
    ),
    (
        LIBC,
        """provider libc {
    probe memory_sbrk_more(void *arg1, size_t arg2);
    probe memory_sbrk_less(void *arg1, size_t arg2);
    probe memory_heap_new(void *heap, size_t size);
    probe memory_heap_free(void *heap, size_t size);
    probe memory_heap_more(void *heap, size_t size);
    probe memory_heap_less(void *heap, size_t size);
    probe memory_malloc_retry(size_t bytes);
    probe memory_realloc_retry(size_t bytes, void *oldmem);
    probe memory_memalign_retry(size_t bytes, size_t alignment);
    probe memory_calloc_retry(size_t bytes);
    probe memory_arena_retry(size_t bytes, void *arena);
    probe memory_arena_new(void *arena, size_t size);
    probe memory_arena_reuse(void *arena, void *previous);
    probe memory_arena_reuse_wait(void *mutex, void *arena, void *previous);
    probe memory_arena_reuse_free_list(void *arena);
    probe memory_mallopt(int param, int value);
    probe memory_mallopt_mxfast(int value, int previous);
    probe memory_mallopt_trim_threshold(int value, int previous, int dyn_disabled);
    probe memory_mallopt_top_pad(int value, int previous, int dyn_disabled);
    probe memory_mallopt_mmap_threshold(int value, int previous, int dyn_disabled);
    probe memory_mallopt_mmap_max(int value, int previous, int dyn_disabled);
    probe memory_mallopt_perturb(int value, int previous);
    probe memory_mallopt_arena_test(int value, int previous);
    probe memory_mallopt_arena_max(int value, int previous);
    probe memory_mallopt_free_dyn_thresholds(int mmap_threshold, int trim_threshold);
    probe memory_tunable_tcache_max_bytes(int value, int previous);
    probe memory_tunable_tcache_count(int value, int previous);
    probe memory_tunable_tcache_unsorted_limit(int value, int previous);
    probe memory_tcache_double_free(void *mem, int bin);
};""",
    ),
    (
        LIBSTDCXX,
        """provider libstdcxx {
    probe throw(void *object, void *type_info);
    probe rethrow(void *object, void *type_info);
    probe catch(void *object, void *type_info);
};""",
    ),
    (
        MYSQL,
        """provider mysql {
    probe connection__start(unsigned long conn_id, char *user, char *host);
    probe connection__done(int status, unsigned long conn_id);
    probe command__start(unsigned long conn_id, int command, char *user, char *host);
    probe command__done(int status);
    probe query__start(char *query, unsigned long conn_id, char *db_name, char *user, char *host);
    probe query__done(int status);
    probe query__parse__start(char *query);
    probe query__parse__done(int status);
    probe query__cache__hit(char *query, unsigned long rows);
    probe query__cache__miss(char *query);
    probe query__exec__start(char *query, unsigned long connid, char *db_name, char *user, char *host, int exec_type);
    probe query__exec__done(int status);
    probe insert__row__start(char *db, char *table);
    probe insert__row__done(int status);
    probe update__row__start(char *db, char *table);
    probe update__row__done(int status);
    probe delete__row__start(char *db, char *table);
    probe delete__row__done(int status);
    probe read__row__start(char *db, char *table, int scan_flag);
    probe read__row__done(int status);
    probe index__read__row__start(char *db, char *table);
    probe index__read__row__done(int status);
    probe handler__rdlock__start(char *db, char *table);
    probe handler__wrlock__start(char *db, char *table);
    probe handler__unlock__start(char *db, char *table);
    probe handler__rdlock__done(int status);
    probe handler__wrlock__done(int status);
    probe handler__unlock__done(int status);
    probe filesort__start(char *db, char *table);
    probe filesort__done(int status, unsigned long rows);
    probe select__start(char *query);
    probe select__done(int status, unsigned long rows);
    probe insert__start(char *query);
    probe insert__done(int status, unsigned long rows);
    probe insert__select__start(char *query);
    probe insert__select__done(int status, unsigned long rows);
    probe update__start(char *query);
    probe update__done(int status, unsigned long rowsmatches, unsigned long rowschanged);
    probe multi__update__start(char *query);
    probe multi__update__done(int status, unsigned long rowsmatches, unsigned long rowschanged);
    probe delete__start(char *query);
    probe delete__done(int status, unsigned long rows);
    probe multi__delete__start(char *query);
    probe multi__delete__done(int status, unsigned long rows);
    probe net__read__start();
    probe net__read__done(int status, unsigned long bytes);
    probe net__write__start(unsigned long bytes);
    probe net__write__done(int status);
    probe keycache__read__start(char *filepath, unsigned long bytes, unsigned long mem_used, unsigned long mem_free);
    probe keycache__read__block(unsigned long bytes);
    probe keycache__read__hit();
    probe keycache__read__miss();
    probe keycache__read__done(unsigned long mem_used, unsigned long mem_free);
    probe keycache__write__start(char *filepath, unsigned long bytes, unsigned long mem_used, unsigned long mem_free);
    probe keycache__write__block(unsigned long bytes);
    probe keycache__write__done(unsigned long mem_used, unsigned long mem_free);
};""",
    ),
    (
        RUBY,
        """provider ruby {
    probe method__entry(const char *classname, const char *methodname, const char *filename, int lineno);
    probe method__return(const char *classname, const char *methodname, const char *filename, int lineno);
    probe cmethod__entry(const char *classname, const char *methodname, const char *filename, int lineno);
    probe cmethod__return(const char *classname, const char *methodname, const char *filename, int lineno);
    probe require__entry(const char *requiredfile, const char *filename, int lineno);
    probe require__return(const char *requiredfile, const char *filename, int lineno);
    probe find__require__entry(const char *requiredfile, const char *filename, int lineno);
    probe find__require__return(const char *requiredfile, const char *filename, int lineno);
    probe load__entry(const char *loadedfile, const char *filename, int lineno);
    probe load__return(const char *loadedfile, const char *filename, int lineno);
    probe raise(const char *classname, const char *filename, int lineno);
    probe object__create(const char *classname, const char *filename, int lineno);
    probe array__create(long length, const char *filename, int lineno);
    probe hash__create(long length, const char *filename, int lineno);
    probe string__create(long length, const char *filename, int lineno);
    probe symbol__create(const char *string, const char *filename, int lineno);
    probe parse__begin(const char *sourcefile, int lineno);
    probe parse__end(const char *sourcefile, int lineno);
    probe insn(const char *insns_name);
    probe insn__operand(const char *val, const char *insns_name);
    probe gc__mark__begin();
    probe gc__mark__end();
    probe gc__sweep__begin();
    probe gc__sweep__end();
};""",
    ),
]

_PROVIDER = re.compile(r"provider\s+(\w+)\s*\{")
_PROBE = re.compile(r"probe\s+(\w+)\s*\(([^)]*)\)\s*;")


def _parse() -> dict[tuple[str, str], tuple[Signature, ...]]:
    out: dict[tuple[str, str], list[Signature]] = {}
    for source, text in _DECLARATIONS:
        m = _PROVIDER.search(text)
        assert m is not None
        provider = m.group(1)
        for name, params in _PROBE.findall(text):
            ps = tuple(p.strip() for p in params.split(",") if p.strip())
            out.setdefault((provider, name), []).append(Signature(provider, name, ps, source))
    return {k: tuple(v) for k, v in out.items()}


CATALOGUE: dict[tuple[str, str], tuple[Signature, ...]] = _parse()


def signatures(provider: str, name: str) -> tuple[Signature, ...]:
    """The catalogue's signatures for a probe (one per known version), or ()."""
    return CATALOGUE.get((provider, name), ())


# Begin probe -> its end probes, for pairs whose names do not follow the __start/__done,
# __entry/__return, __begin/__end rule (utrace.runtimes.usdt_pairs). PostgreSQL ends a transaction
# with a commit or an abort (src/backend/access/transam/xact.c); HotSpot's contended monitor enter
# and wait end at entered and waited (src/hotspot/share/runtime/objectMonitor.cpp).
PAIRS: dict[tuple[str, str], tuple[str, ...]] = {
    ("postgresql", "transaction__start"): ("transaction__commit", "transaction__abort"),
    ("hotspot", "monitor__contended__enter"): ("monitor__contended__entered",),
    ("hotspot", "monitor__wait"): ("monitor__waited",),
}

# Begin/end pairs by name that must not be paired, with why: their begins and ends do not fire in matching
# numbers, so pairing by nesting would give wrong durations.
UNPAIRED: dict[tuple[str, str], str] = {
    ("python", "function__entry"): (
        "CPython 3.11 to 3.14 fire function__entry only for frames entered from C while function__return "
        "fires for every return (python/cpython#98894, fixed in 3.15): paired, they would give wrong durations"
    ),
}
