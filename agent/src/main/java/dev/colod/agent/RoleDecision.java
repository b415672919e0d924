package dev.colod.agent;

import dev.colod.agent.config.ColodConfig;

import java.util.function.BooleanSupplier;

/**
 * Which role this host takes for a VM when colod starts, from what it finds (docs/OPERATIONS.md, "Roles"): a
 * pure function of the facts, so every case is unit-tested without a VM, a peer or a file.
 */
public final class RoleDecision
{
    /** What colod does with the VM. */
    public enum Outcome
    {
        /** Run (or adopt) the VM and protect it. */
        PRIMARY,
        /** Stand by for the VM (configured or recorded). */
        SECONDARY,
        /** This host was fenced and roles follow the VM: discard the fenced copy, stand by for the other host. */
        SECONDARY_AFTER_FENCE,
        /** Its QEMU is gone here and the peer runs the VM since a failover: stand by for it. */
        SECONDARY_PEER_RUNS_IT,
        /** This host was fenced and roles are fixed: refuse to start the VM here until an operator decides. */
        REFUSE_FENCED;

        /** Whether this outcome is a role change caused by a failover (counted in the role file). */
        public boolean afterFailover()
        {
            return this == SECONDARY_AFTER_FENCE || this == SECONDARY_PEER_RUNS_IT;
        }
    }

    /**
     * @param configured    the role in the YAML
     * @param recorded      the role in the role file, null if none (or roles are fixed)
     * @param rolesFollowVm {@code listen} is set: roles follow the VM and are recorded
     * @param fencedHere    the fence marker exists in the state directory
     * @param qemuRunsHere  a QEMU of this VM was found running here (adopted)
     * @param peerRunsIt    asks the peer whether it runs the VM since a failover (only asked when it matters)
     */
    public record Facts(ColodConfig.Role configured, ColodConfig.Role recorded, boolean rolesFollowVm, boolean fencedHere,
                        boolean qemuRunsHere, BooleanSupplier peerRunsIt)
    {
        /** The role before any finding: the recorded one wins over the configured one. */
        public ColodConfig.Role starting()
        {
            return recorded != null ? recorded : configured;
        }
    }

    private RoleDecision()
    {
    }

    public static Outcome decide(final Facts f)
    {
        if (f.starting() == ColodConfig.Role.SECONDARY)
        {
            return Outcome.SECONDARY;
        }
        if (f.fencedHere())
        {
            return f.rolesFollowVm() ? Outcome.SECONDARY_AFTER_FENCE : Outcome.REFUSE_FENCED;
        }
        if (!f.qemuRunsHere() && f.recorded() != null && f.peerRunsIt().getAsBoolean())
        {
            return Outcome.SECONDARY_PEER_RUNS_IT;
        }
        return Outcome.PRIMARY;
    }
}
