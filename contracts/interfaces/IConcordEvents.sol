// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IConcordTypes} from "./IConcordTypes.sol";

/// @title Concord events
/// @notice Every event the protocol emits: the record indexers and nodes follow.
interface IConcordEvents is IConcordTypes {

    /// @notice A node registered with an initial stake.
    event NodeRegistered(address indexed node, Role role, uint256 stake);
    /// @notice A node added stake.
    event StakeAdded(address indexed node, uint256 amount, uint256 stake);
    /// @notice A node asked to unbond `amount` (total unbonding now `unbonding`).
    event UnbondRequested(address indexed node, uint256 amount, uint256 unbonding, uint256 unbondAt);
    /// @notice Unbonded stake left the stake and was credited to the node's balance.
    event UnbondCompleted(address indexed node, uint256 amount);
    /// @notice A task was created with its parameters and initial escrow.
    event TaskCreated(uint256 indexed taskId, address indexed initiator, TaskParams params, uint256 budget);
    /// @notice The initiator closed a task: rounds up to `headRound` still settle, none opens.
    event TaskClosing(uint256 indexed taskId, uint256 headRound);
    /// @notice Someone added escrow to a task.
    event TaskToppedUp(uint256 indexed taskId, address indexed from, uint256 amount, uint256 budget);
    /// @notice The initiator reclaimed the leftover budget of an ended task (credited).
    event BudgetReclaimed(uint256 indexed taskId, address indexed initiator, uint256 amount);
    /// @notice A node joined a task (validatorIndex is meaningful for validators only).
    event Joined(uint256 indexed taskId, address indexed node, Role role, uint8 validatorIndex);
    /// @notice A node left a task.
    event Left(uint256 indexed taskId, address indexed node, Role role);
    /// @notice A round opened (its submit phase started at openAt); `reserved` tokens moved
    ///         from the task budget to the round (trainer reward + validator fee).
    event RoundOpened(uint256 indexed taskId, uint256 indexed round, uint256 openAt, uint256 reserved);
    /// @notice A phase closed before its deadline because every expected actor acted.
    event PhaseClosedEarly(uint256 indexed taskId, uint256 indexed round, Phase phase);
    /// @notice A validator committed its seed share for `round` (the hash is in storage).
    event SeedShareCommitted(uint256 indexed taskId, uint256 indexed round, address indexed validator);
    /// @notice A validator revealed its seed share (XORed into the round's mix).
    event SeedShareRevealed(uint256 indexed taskId, uint256 indexed round, address indexed validator, bytes32 share);
    /// @notice The submit phase of `round` ran to its deadline and this block, the first to touch
    ///         the round's seed after it, anchored it (mix = block number | blockhash(block - 1)).
    ///         An early close emits no such event: its anchor is the block of its
    ///         `PhaseClosedEarly(taskId, round, Submit)` (and `seedInfo` names it).
    event SeedAnchored(uint256 indexed taskId, uint256 indexed round, uint256 anchorBlock);
    /// @notice The check seed of `round` is fixed: keccak256(abi.encode(taskId, round, mix)),
    ///         mix = the anchor's block value XOR the shares of `sharesRevealed` (bit i = slot i).
    ///         Validators sample their expensive checks from it.
    event CheckSeedFixed(
        uint256 indexed taskId, uint256 indexed round, bytes32 seed, uint256 anchorBlock, uint256 sharesRevealed
    );
    /// @notice A validator published the items of its sample that failed (none: all passed).
    event Flagged(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256[] items);
    /// @notice A trainer submitted its work for a round; the chain keeps (trainer, baseRound,
    ///         workUnits) and this event is the record of bundleDigest and proofRoot.
    event Submitted(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed trainer,
        uint256 index,
        uint256 baseRound,
        bytes32 bundleDigest,
        bytes32 proofRoot,
        uint256 workUnits
    );
    /// @notice A validator committed to its verdict for a round.
    event Committed(uint256 indexed taskId, uint256 indexed round, address indexed validator, bytes32 commitment);
    /// @notice A validator revealed its reject bitmap and next-model digest.
    event Revealed(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed validator,
        uint256[] rejectWords,
        bytes32 nextModelDigest
    );
    /// @notice Finalize processed steps up to `cursor` of `total` (= 2 * submissions).
    event FinalizeProgressed(uint256 indexed taskId, uint256 indexed round, uint256 cursor, uint256 total);
    /// @notice A majority of revealing validators rejected submission `index`: the trainer
    ///         lost `slashed` stake, `bounty` of it went to the rejecting validators.
    event SubmissionRejected(
        uint256 indexed taskId,
        uint256 indexed round,
        address indexed trainer,
        uint256 index,
        uint256 slashed,
        uint256 bounty
    );
    /// @notice Exactly half of the revealing validators rejected submission `index`: it is
    ///         neither paid nor slashed; its work stays in the pro-rata denominator and its share
    ///         of the reward returns to the budget.
    event SubmissionUndecided(
        uint256 indexed taskId, uint256 indexed round, address indexed trainer, uint256 index, uint256 rejects
    );
    /// @notice Accepted submission `index` was credited `reward`.
    event SubmissionRewarded(
        uint256 indexed taskId, uint256 indexed round, address indexed trainer, uint256 index, uint256 reward
    );
    /// @notice A rejecting validator was credited slashing bounty (summed over one finalize call).
    event BountyPaid(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 amount);
    /// @notice A validator that revealed the winning next-model digest was credited its fee share.
    event ValidatorPaid(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 fee);
    /// @notice A validator that committed a verdict or a seed share and did not reveal it was
    ///         slashed (once per round; burned).
    event ValidatorSlashed(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 amount);
    /// @notice A validator joined before round `round` opened committed nothing in it: it left
    ///         the task (slot freed, no slash); it may join again after REJOIN_COOLDOWN_ROUNDS.
    event ValidatorRemoved(uint256 indexed taskId, uint256 indexed round, address indexed validator);
    /// @notice Round settled: model round+1 is `nextModelDigest`; `returned` tokens went back
    ///         to the task budget (unpaid reward/fee, rounding dust). `acceptedWork` is the
    ///         pro-rata denominator: accepted and tied work.
    event RoundFinalized(
        uint256 indexed taskId,
        uint256 indexed round,
        bytes32 nextModelDigest,
        bool isVoid,
        uint256 acceptedWork,
        uint256 returned
    );
    /// @notice Slashed stake of one finalize call, less the bounties paid from it, was sent to
    ///         0x000000000000000000000000000000000000dEaD.
    event StakeBurned(uint256 indexed taskId, uint256 indexed round, uint256 amount);
    /// @notice Tokens left the protocol to `account` from its credited balance.
    event Withdrawn(address indexed account, uint256 amount);
}
