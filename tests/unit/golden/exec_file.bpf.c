#include <uapi/linux/ptrace.h>

struct header {
    u32 probe;
    u32 pid;
    u32 tid;
    u32 cpu;
    u64 ts;
    u64 latency;
    char comm[16];
} __attribute__((packed));

struct start_key {
    u64 a;
    u64 b;
    u32 pair;
    u32 who;
};

struct agg_key {
    u32 probe;
    u32 pid;
    u32 slot;
};

BPF_RINGBUF_OUTPUT(events, 256);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(unwoken, u64, 1);
BPF_HASH(target, u32, u32, 4096);
BPF_HASH(tracked, u32, u32, 32768);
BPF_ARRAY(family, u64, 4);
BPF_ARRAY(exe_file, u64, 2);

static __always_inline void utrace_lost(void) {
    u32 zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n) *n += 1;
}

static __always_inline u64 utrace_wakeup(u64 size) {
    u32 zero = 0;
    u64 *n = unwoken.lookup(&zero);
    if (!n) return 0;
    if (*n == 0) {
        *n = 1;
        return BPF_RB_FORCE_WAKEUP;
    }
    *n += size;
    if (*n < 65536) return BPF_RB_NO_WAKEUP;
    *n = 1;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline int utrace_ids(u32 *pid, u32 *tid) {
    u64 id = bpf_get_current_pid_tgid();
    *pid = id >> 32;
    *tid = (u32)id;
    return 0;
}

static __always_inline int utrace_followed(void) {
    u32 host = bpf_get_current_pid_tgid() >> 32;
    return tracked.lookup(&host) != 0;
}

static __always_inline void utrace_family(u32 slot) {
    u64 *n = family.lookup(&slot);
    if (n) __sync_fetch_and_add(n, 1);
}

struct event_0 {
    struct header h;
    u64 f0;
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u32 *want = target.lookup(&pid);
    if ((!want || *want != 1) && !utrace_followed()) return 0;
    u64 now = bpf_ktime_get_ns();
    struct event_0 *e = events.ringbuf_reserve(sizeof(struct event_0));
    if (!e) {
        utrace_lost();
        return 0;
    }
    e->h.probe = 0;
    e->h.pid = pid;
    e->h.tid = tid;
    e->h.cpu = bpf_get_smp_processor_id();
    e->h.ts = now;
    e->h.latency = 0;
    bpf_get_current_comm(&e->h.comm, sizeof(e->h.comm));
    u64 t1 = ctx->si;
    e->f0 = t1;
    events.ringbuf_submit(e, utrace_wakeup(sizeof(struct event_0)));
    return 0;
}

int utrace_exec(struct bpf_raw_tracepoint_args *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u32 host = bpf_get_current_pid_tgid() >> 32;
    u32 k_ino = 0, k_dev = 1;
    u64 *want_ino = exe_file.lookup(&k_ino);
    u64 *want_dev = exe_file.lookup(&k_dev);
    if (!want_ino || !want_dev) return 0;
    u64 file = 0, inode = 0, sb = 0, ino = 0;
    u32 dev = 0;
    bpf_probe_read_kernel(&file, 8, (void *)(ctx->args[2] + 64ULL));
    if (file) bpf_probe_read_kernel(&inode, 8, (void *)(file + 32ULL));
    if (inode) {
        bpf_probe_read_kernel(&ino, 8, (void *)(inode + 64ULL));
        bpf_probe_read_kernel(&sb, 8, (void *)(inode + 40ULL));
    }
    if (sb) bpf_probe_read_kernel(&dev, 4, (void *)(sb + 16ULL));
    if (sb && ino == *want_ino && dev == *want_dev) {
        u32 one = 1;
        if (tracked.insert(&host, &one) == 0) {
            utrace_family(3);
        } else if (!tracked.lookup(&host)) {
            utrace_family(2);
        }
        return 0;
    }
    if (tracked.delete(&host) == 0) utrace_family(1);
    if (target.delete(&pid) == 0) utrace_family(1);
    return 0;
}

int utrace_fork(struct bpf_raw_tracepoint_args *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u32 *t = target.lookup(&pid);
    if ((!t || *t != 1) && !utrace_followed()) return 0;
    u32 host = bpf_get_current_pid_tgid() >> 32;
    u32 child = 0;
    bpf_probe_read_kernel(&child, 4, (void *)(ctx->args[1] + 1268ULL));
    if (child == 0 || child == host) return 0;
    u32 one = 1;
    if (tracked.insert(&child, &one) == 0) {
        utrace_family(0);
    } else if (!tracked.lookup(&child)) {
        utrace_family(2);
    }
    return 0;
}

int utrace_exit(struct bpf_raw_tracepoint_args *ctx) {
    u64 task = bpf_get_current_task();
    u64 sig = 0;
    s32 live = 1;
    bpf_probe_read_kernel(&sig, 8, (void *)(task + 1848ULL));
    if (sig == 0 || bpf_probe_read_kernel(&live, 4, (void *)(sig + 4ULL)) < 0 || live != 0) return 0;
    u32 host = bpf_get_current_pid_tgid() >> 32;
    if (tracked.delete(&host) == 0) utrace_family(1);
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid) == 0 && target.delete(&pid) == 0) utrace_family(1);
    return 0;
}
