// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Concord types
/// @notice The enums and structs of the protocol's external surface (tasks, nodes, rounds),
///         shared by its errors, events and functions.
interface IConcordTypes {

    /// @notice A node's role, fixed at registration.
    enum Role {
        None,
        Trainer,
        Validator
    }

    /// @notice Phase of one round of a task.
    /// @dev Pending: not opened yet. Submit/Commit/Reveal: that phase is running.
    ///      Finalize: reveal closed, waiting for (or in the middle of) paginated finalize.
    ///      Finalized: settled, model round+1 fixed. Void: settled with fewer than minValidators
    ///      reveals (model round+1 = model round, no trainer paid or slashed, no fee paid).
    enum Phase {
        Pending,
        Submit,
        Commit,
        Reveal,
        Finalize,
        Finalized,
        Void
    }

    /// @notice Every parameter of a task, fixed at creation (DESIGN.md section 3).
    /// @dev The environment (id + params), hyper-parameters and validation criteria live off
    ///      chain in the task spec manifest; the chain stores its sha256 as `specDigest`.
    /// @param specDigest sha256 of the task spec manifest (env, hyper-parameters, criteria).
    /// @param initialModelDigest sha256 of the model-0 manifest.
    /// @param trainerRewardPerRound Tokens shared by accepted submissions of a round, pro rata
    ///        to workUnits. Reserved from the budget when the round opens.
    /// @param validatorFeePerRound Tokens shared by the validators that revealed the winning
    ///        next-model digest. Reserved from the budget when the round opens.
    /// @param minTrainerStake Stake a trainer needs to join the task and to submit.
    /// @param minValidatorStake Stake a validator needs to join the task and to commit.
    /// @param slashAmount Slash for a rejected submission and for a commit without reveal
    ///        (capped at the node's stake).
    /// @param submitSeconds Length of the submit phase (> 0).
    /// @param commitSeconds Length of the commit phase (>= MIN_COMMIT_SECONDS): its first quarter
    ///        takes seed-share reveals, its first half flags, all of it commits.
    /// @param revealSeconds Length of the reveal phase (> 0).
    /// @param maxRounds Number of rounds the task runs; 0 = until the budget runs out.
    /// @param bountyBps Share of a trainer slash paid to the validators that rejected it, in
    ///        basis points (<= 10000); the rest returns to the task budget.
    /// @param asyncLevel How many rounds generation may run ahead of verification
    ///        (<= MAX_ASYNC_LEVEL). A submission to round r may build on model
    ///        baseRound with round - asyncLevel <= baseRound <= round.
    /// @param minValidators Reveals needed for a round not to be void (1..MAX_VALIDATORS).
    /// @param maxWorkUnits The largest `workUnits` one submission can honestly claim (derived
    ///        from the spec: rollouts per submission x max new tokens); a larger claim reverts.
    struct TaskParams {
        bytes32 specDigest;
        bytes32 initialModelDigest;
        uint96 trainerRewardPerRound;
        uint96 validatorFeePerRound;
        uint96 minTrainerStake;
        uint96 minValidatorStake;
        uint96 slashAmount;
        uint32 submitSeconds;
        uint32 commitSeconds;
        uint32 revealSeconds;
        uint32 maxRounds;
        uint16 bountyBps;
        uint8 asyncLevel;
        uint8 minValidators;
        uint64 maxWorkUnits;
    }

    /// @notice Mutable state of a task.
    /// @param initiator Creator of the task; may reclaim the leftover budget once it is over.
    /// @param budget Escrowed tokens not yet reserved by an opened round.
    /// @param headRound Newest opened round (as of the last state-changing call; views that
    ///        take a round number account for rounds that are due but not yet recorded).
    /// @param finalizedRounds Rounds settled so far; model `finalizedRounds` is the newest
    ///        final model and round `finalizedRounds` is the next to finalize.
    /// @param trainers Joined trainers.
    /// @param validators Joined validators.
    /// @param validatorSlots Highest validator slot index handed out + 1 (slots of validators
    ///        that left or were removed are handed out again).
    /// @param resumeAt Last top-up that lifted the budget above one round (rounds due while
    ///        the budget was short open no earlier than this).
    /// @param closed The initiator closed the task: no round opens any more; once the rounds in
    ///        flight are settled the initiator may reclaim the budget.
    struct TaskState {
        address initiator;
        uint96 budget;
        uint32 headRound;
        uint32 finalizedRounds;
        uint16 trainers;
        uint16 validators;
        uint8 validatorSlots;
        uint40 resumeAt;
        bool closed;
    }

    /// @notice A registered node.
    /// @param role Trainer or Validator (None = not registered).
    /// @param stake Total stake, including the part being unbonded (all of it is slashable).
    /// @param unbonding Part of `stake` requested for unbonding (not counted for joining).
    /// @param unbondAt Earliest time `completeUnbond` may release `unbonding`.
    /// @param joinedTasks Tasks the node is joined to; unbonding is refused while > 0.
    struct NodeInfo {
        Role role;
        uint96 stake;
        uint96 unbonding;
        uint40 unbondAt;
        uint16 joinedTasks;
    }

    /// @notice A node's membership of one task.
    /// @param joined Currently joined.
    /// @param role Role it joined with.
    /// @param validatorIndex Index in the task's validator slots (validators only).
    /// @param hasSubmitted Whether the trainer ever submitted to this task.
    /// @param lastSubmitRound Last round the trainer submitted to (valid if hasSubmitted).
    /// @param joinedRound The task's head round when the node (last) joined; a validator must
    ///        commit in every round that opened after it joined, or it loses its slot.
    /// @param rejoinRound A validator removed for not committing may join again once the head
    ///        round reaches this (0: never removed).
    struct MemberInfo {
        bool joined;
        Role role;
        uint8 validatorIndex;
        bool hasSubmitted;
        uint32 lastSubmitRound;
        uint32 joinedRound;
        uint32 rejoinRound;
    }

    /// @notice One round as seen now (lazy phases resolved against block.timestamp).
    /// @param phase Current phase.
    /// @param openAt When the submit phase opened (0 while Pending).
    /// @param submitEnd End of the submit phase (deadline, or early close time).
    /// @param commitEnd End of the commit phase.
    /// @param revealEnd End of the reveal phase.
    /// @param submissions Number of submissions.
    /// @param commits Number of validators that committed.
    /// @param reveals Number of validators that revealed.
    /// @param finalizeCursor Finalize progress in [0, 2 * submissions]: the first
    ///        `submissions` steps tally (and slash), the next `submissions` steps pay.
    /// @param acceptedWork Sum of workUnits of accepted submissions tallied so far.
    /// @param finalizedAt When the round was finalized (0 if not yet).
    /// @param nextModelDigest Model round+1 once final (zero before).
    struct RoundInfo {
        Phase phase;
        uint40 openAt;
        uint40 submitEnd;
        uint40 commitEnd;
        uint40 revealEnd;
        uint32 submissions;
        uint8 commits;
        uint8 reveals;
        uint32 finalizeCursor;
        uint96 acceptedWork;
        uint40 finalizedAt;
        bytes32 nextModelDigest;
    }

    /// @notice The check-seed record of one live round. Bit i of a mask = validator slot i.
    /// @param sharesCommitted Validators that committed a seed share.
    /// @param sharesRevealed Validators that revealed it.
    /// @param flagged Validators that published their flags.
    /// @param anchorBlock Block in which the submit phase was seen closed (0: not anchored yet).
    /// @param shareEnd Share reveals end; `fixSeed` fixes the seed from what was revealed after.
    /// @param flagEnd Flags end.
    /// @param seed The check seed once fixed, else zero.
    struct SeedInfo {
        uint64 sharesCommitted;
        uint64 sharesRevealed;
        uint64 flagged;
        uint64 anchorBlock;
        uint40 shareEnd;
        uint40 flagEnd;
        bytes32 seed;
    }
}
