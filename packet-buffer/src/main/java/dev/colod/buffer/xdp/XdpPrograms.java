package dev.colod.buffer.xdp;

import java.util.ArrayList;
import java.util.List;

import static dev.colod.buffer.xdp.Bpf.Insn.call;
import static dev.colod.buffer.xdp.Bpf.Insn.exit;
import static dev.colod.buffer.xdp.Bpf.Insn.loadMap;
import static dev.colod.buffer.xdp.Bpf.Insn.loadWord;
import static dev.colod.buffer.xdp.Bpf.Insn.movImm;

/**
 * colod's BPF programs, all of them, as instructions (no compiler at run time). Each is shown first as the C it
 * is equivalent to. Registers: r0 return value, r1-r5 arguments, r10 frame pointer.
 */
public final class XdpPrograms
{
    // uapi/linux/bpf.h: enum xdp_action, helper ids, struct xdp_md offsets
    public static final int XDP_ABORTED = 0;
    public static final int XDP_DROP = 1;
    public static final int XDP_PASS = 2;
    public static final int XDP_REDIRECT = 4;
    static final int HELPER_REDIRECT = 23;
    static final int HELPER_REDIRECT_MAP = 51;
    static final int XDP_MD_RX_QUEUE_INDEX = 16;

    private XdpPrograms()
    {
    }

    /**
     * Guest egress, on the VM's tap (XDP there sees every frame QEMU writes): every frame into the AF_XDP socket
     * of its queue, whose UMEM is the epoch buffer; with no socket (agent gone) the frame is dropped, never
     * let out unheld.
     * <pre>
     * int hold(struct xdp_md *ctx) {
     *     return bpf_redirect_map(&amp;xsks, ctx-&gt;rx_queue_index, XDP_DROP);
     * }
     * </pre>
     */
    public static long[] holdEgress(final int xskMapFd)
    {
        final List<Long> p = new ArrayList<>();
        p.add(loadWord(2, 1, XDP_MD_RX_QUEUE_INDEX)); // r2 = ctx->rx_queue_index
        for (final long i : loadMap(1, xskMapFd))     // r1 = &xsks
        {
            p.add(i);
        }
        p.add(movImm(3, XDP_DROP));                   // r3 = XDP_DROP: the action when the queue has no socket
        p.add(call(HELPER_REDIRECT_MAP));             // r0 = bpf_redirect_map(r1, r2, r3)
        p.add(exit());                                // return r0
        return p.stream().mapToLong(Long::longValue).toArray();
    }

    /**
     * Inbound, on the uplink veth (frames from the bridge): straight on to the VM's tap in the kernel, never held.
     * <pre>
     * int inbound(struct xdp_md *ctx) {
     *     return bpf_redirect(VM_TAP_IFINDEX, 0);
     * }
     * </pre>
     */
    public static long[] redirectInbound(final int vmTapIfindex)
    {
        return new long[]{
            movImm(1, vmTapIfindex),   // r1 = the VM tap's ifindex
            movImm(2, 0),              // r2 = flags 0
            call(HELPER_REDIRECT),     // r0 = bpf_redirect(r1, r2): XDP_REDIRECT
            exit()};                   // return r0
    }
}
