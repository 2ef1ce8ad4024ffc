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
    char s[32];
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
    char f0[32];
    u64 f1;
    u32 f2_len;
    u32 f2_flags;
    char f2[24];
    u64 f3;
    u64 f5;
    u64 f6;
    u64 f7;
    u64 f8;
} __attribute__((packed));
int probe_0(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    if (utrace_ids(&pid, &tid)) return 0;
    u64 t2 = ctx->di;
    u64 t1 = 0;
    bpf_probe_read_user(&t1, 4, (void *)(t2 + 16ULL));
    if ((s32)t1 != (s32)12ULL) return 0;
    struct agg_key t3 = { .probe = 0ULL, .pid = pid, .slot = 0 };
    u64 *t4 = counts.lookup(&t3);
    if (!t4) {
        u64 zero = 0;
        counts.insert(&t3, &zero);
        t4 = counts.lookup(&t3);
    }
    if (t4) *t4 += 1; else utrace_lost();
    u32 t7 = 0;
    struct by_key *t5 = by_scratch.lookup(&t7);
    struct by_key *t5z = by_zero.lookup(&t7);
    if (!t5 || !t5z) return 0;
    bpf_probe_read_kernel(t5, sizeof(struct by_key), t5z);
    t5->probe = 0;
    if (t2 == 0) { t5->flags = 1; } else {
        long r = bpf_probe_read_user_str(t5->s, 32, (void *)t2);
        if (r < 0) { t5->flags = 4; }
        else { t5->num = r > 0 ? r - 1 : 0; if (r == 32) t5->flags = 2; }
    }
    u64 *t6 = by_counts.lookup(t5);
    if (!t6) {
        u64 zero = 0;
        by_counts.insert(t5, &zero);
        t6 = by_counts.lookup(t5);
    }
    if (t6) { *t6 += 1; } else {
        u32 t7l = 0;
        u64 *t7n = by_lost.lookup(&t7l);
        if (t7n) *t7n += 1;
    }
    return 0;
}
