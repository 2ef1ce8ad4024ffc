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

BPF_RINGBUF_OUTPUT(events, 1);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(unwoken, u64, 1);
BPF_TABLE("lru_hash", struct start_key, u64, starts, 65536);
BPF_HASH(nest, struct start_key, u64, 65536);
BPF_F_TABLE("percpu_hash", struct agg_key, u64, counts, 65536, BPF_F_NO_PREALLOC);
BPF_F_TABLE("percpu_hash", struct agg_key, u64, hist, 65536, BPF_F_NO_PREALLOC);

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
    if (*n < 4096) return BPF_RB_NO_WAKEUP;
    *n = 1;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline int utrace_ids(u32 *pid, u32 *tid) {
    u64 id = bpf_get_current_pid_tgid();
    *pid = id >> 32;
    *tid = (u32)id;
    return 0;
}

struct event_0 {
    struct header h;
    u32 f0_len;
    u32 f0_flags;
    char f0[256];
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct start_key nk = { .a = 0, .b = 0, .pair = 0, .who = tid };
    u64 *nd = nest.lookup(&nk);
    u64 depth = nd ? *nd : 0;
    u64 deeper = depth + 1;
    if (nd) { *nd = deeper; } else if (nest.update(&nk, &deeper)) { utrace_lost(); }
    struct start_key sk = { .a = depth, .b = 0, .pair = 0, .who = tid };
    starts.update(&sk, &now);
    struct agg_key t1 = { .probe = 0ULL, .pid = pid, .slot = 0 };
    u64 *t2 = counts.lookup(&t1);
    if (!t2) {
        u64 zero = 0;
        counts.insert(&t1, &zero);
        t2 = counts.lookup(&t1);
    }
    if (t2) *t2 += 1; else utrace_lost();
    return 0;
}

struct event_1 {
    struct header h;
    u32 f0_len;
    u32 f0_flags;
    char f0[256];
} __attribute__((packed));
int probe_1(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 now = bpf_ktime_get_ns();
    struct start_key nk = { .a = 0, .b = 0, .pair = 0, .who = tid };
    u64 *nd = nest.lookup(&nk);
    u64 depth = 0xffffffffffffffffULL;
    if (nd && *nd > 0) {
        depth = *nd - 1;
        if (depth == 0) nest.delete(&nk); else *nd = depth;
    }
    struct start_key sk = { .a = depth, .b = 0, .pair = 0, .who = tid };
    u64 *start = starts.lookup(&sk);
    u64 latency = 0;
    if (start) { latency = now - *start; starts.delete(&sk); }
    struct agg_key t1 = { .probe = 1ULL, .pid = pid, .slot = 0 };
    u64 *t2 = counts.lookup(&t1);
    if (!t2) {
        u64 zero = 0;
        counts.insert(&t1, &zero);
        t2 = counts.lookup(&t1);
    }
    if (t2) *t2 += 1; else utrace_lost();
    if (start) {
        struct agg_key t3 = { .probe = 1ULL, .pid = pid, .slot = bpf_log2l(latency) };
        u64 *t4 = hist.lookup(&t3);
        if (!t4) {
            u64 zero = 0;
            hist.insert(&t3, &zero);
            t4 = hist.lookup(&t3);
        }
        if (t4) *t4 += 1; else utrace_lost();
    }
    return 0;
}
