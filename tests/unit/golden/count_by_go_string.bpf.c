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
BPF_F_TABLE("percpu_hash", struct agg_key, u64, counts, 65536, BPF_F_NO_PREALLOC);
struct by_key {
    u32 probe;
    u32 flags;
    u64 num;
    char s[64];
};
BPF_F_TABLE("percpu_hash", struct by_key, u64, by_counts, 10240, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(by_lost, u64, 1);
BPF_PERCPU_ARRAY(by_scratch, struct by_key, 1);
BPF_ARRAY(by_zero, struct by_key, 1);

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
    char f0[64];
    u64 f1;
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    struct agg_key t1 = { .probe = 0ULL, .pid = pid, .slot = 0 };
    u64 *t2 = counts.lookup(&t1);
    if (!t2) {
        u64 zero = 0;
        counts.insert(&t1, &zero);
        t2 = counts.lookup(&t1);
    }
    if (t2) *t2 += 1; else utrace_lost();
    u64 t6 = 0;
    bpf_probe_read_user(&t6, 8, (void *)(ctx->sp + 8ULL));
    u64 t7 = 0;
    bpf_probe_read_user(&t7, 8, (void *)(ctx->sp + 16ULL));
    u32 t5 = 0;
    struct by_key *t3 = by_scratch.lookup(&t5);
    struct by_key *t3z = by_zero.lookup(&t5);
    if (!t3 || !t3z) return 0;
    bpf_probe_read_kernel(t3, sizeof(struct by_key), t3z);
    t3->probe = 0;
    s64 t8 = (s64)(s64)t7;
    if (t6 == 0 && t8 != 0) { t3->flags = 1; } else if (t8 > 0) {
        u64 n = t8 > 64 ? 64 : (u64)t8;
        if (t8 > 64) t3->flags = 2;
        if (n > 64) n = 64;
        if (bpf_probe_read_user(t3->s, n, (void *)t6) < 0) t3->flags = 4;
        else t3->num = n;
    }
    u64 *t4 = by_counts.lookup(t3);
    if (!t4) {
        u64 zero = 0;
        by_counts.insert(t3, &zero);
        t4 = by_counts.lookup(t3);
    }
    if (t4) { *t4 += 1; } else {
        u32 t5l = 0;
        u64 *t5n = by_lost.lookup(&t5l);
        if (t5n) *t5n += 1;
    }
    return 0;
}
