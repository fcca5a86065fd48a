// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IConcordTypes} from "./IConcordTypes.sol";

/// @title Concord errors
/// @notice Every custom error the protocol reverts with, each carrying the values that
///         explain it (OpenZeppelin v5 style: errors apart from functions).
interface IConcordErrors is IConcordTypes {

    /// @notice An amount argument was zero where a positive amount is required.
    error ZeroAmount();
    /// @notice A digest argument was zero.
    error ZeroDigest();
    /// @notice The account is already a registered node.
    error AlreadyRegistered(address node);
    /// @notice The account is not a registered node.
    error NotRegistered(address account);
    /// @notice Registration asked for Role.None or an unknown role.
    error InvalidRole(Role role);
    /// @notice The node's role does not allow the call.
    error WrongRole(address account, Role expected, Role actual);
    /// @notice The node's stake (not counting unbonding stake) is below what is required.
    error InsufficientStake(address account, uint256 stake, uint256 required);
    /// @notice requestUnbond asked for more than the node's stake not already unbonding.
    error UnbondExceedsStake(address node, uint256 available, uint256 requested);
    /// @notice Unbonding is refused while the node is joined to a task (it may have
    ///         unfinalized work, and its stake must stay slashable).
    error PendingWork(address node, uint256 joinedTasks);
    /// @notice completeUnbond was called with nothing requested.
    error NothingUnbonding(address node);
    /// @notice completeUnbond was called before the unbonding delay elapsed.
    error UnbondNotReady(address node, uint256 unbondAt, uint256 nowTs);
    /// @notice withdraw asked for more than the credited balance.
    error InsufficientBalance(address account, uint256 balance, uint256 requested);
    /// @notice No task has this id.
    error UnknownTask(uint256 taskId);
    /// @notice A phase length of zero seconds.
    error ZeroPhaseLength();
    /// @notice asyncLevel above MAX_ASYNC_LEVEL.
    error AsyncLevelTooHigh(uint256 asyncLevel, uint256 max);
    /// @notice bountyBps above 10000.
    error BountyTooHigh(uint256 bountyBps);
    /// @notice minValidators is 0 or above MAX_VALIDATORS.
    error MinValidatorsOutOfRange(uint256 minValidators, uint256 max);
    /// @notice The initial budget does not cover round 0 (trainer reward + validator fee).
    error BudgetBelowOneRound(uint256 budget, uint256 perRound);
    /// @notice Only the task initiator may call this.
    error NotInitiator(uint256 taskId, address caller);
    /// @notice reclaimBudget before the task is over: a maxRounds task is over once its last
    ///         round is settled; any task is over once it was closed and its rounds in flight
    ///         are settled.
    error TaskNotOver(uint256 taskId);
    /// @notice The task was closed by its initiator (no top-up, no second close).
    error TaskIsClosed(uint256 taskId);
    /// @notice trainerRewardPerRound + validatorFeePerRound does not fit the budget's uint96.
    error PerRoundTooHigh(uint256 perRound, uint256 max);
    /// @notice A deposit would lift the protocol's liabilities (escrow + stakes + credited)
    ///         above `cap` (uint96 max): every per-task and per-node amount then fits its slot,
    ///         so settlement can never revert on a cast.
    error LiabilitiesCapExceeded(uint256 liabilities, uint256 cap);
    /// @notice A submission claimed more work than the task allows one submission.
    error WorkUnitsAboveMax(uint256 taskId, uint256 workUnits, uint256 maxWorkUnits);
    /// @notice finalize named a round that never opened (beyond the head: after the last round
    ///         of a maxRounds task, after the budget ran dry, after close) or whose live slot
    ///         holds another round.
    error RoundNotOpened(uint256 taskId, uint256 round);
    /// @notice finalize named a round that is already settled.
    error RoundAlreadySettled(uint256 taskId, uint256 round);
    /// @notice join by a node that is already joined to the task.
    error AlreadyJoined(uint256 taskId, address node);
    /// @notice The caller is not joined to the task (with the needed role).
    error NotJoined(uint256 taskId, address account);
    /// @notice MAX_VALIDATORS validators hold a slot of the task.
    error TooManyValidators(uint256 taskId, uint256 max);
    /// @notice leave while the node has work in a round that is not finalized yet.
    error WorkNotFinalized(uint256 taskId, address node, uint256 round);
    /// @notice The call names a round other than the one it must act on.
    error WrongRound(uint256 taskId, uint256 expected, uint256 actual);
    /// @notice The round is not in the phase the call needs.
    error WrongPhase(uint256 taskId, uint256 round, Phase expected, Phase actual);
    /// @notice The trainer already submitted to this round.
    error AlreadySubmitted(uint256 taskId, uint256 round, address trainer);
    /// @notice baseRound is outside [round - asyncLevel, round].
    error BaseRoundOutOfWindow(uint256 taskId, uint256 round, uint256 baseRound, uint256 asyncLevel);
    /// @notice The model named is not final yet.
    error ModelNotFinal(uint256 taskId, uint256 model);
    /// @notice A submission must claim at least one work unit.
    error ZeroWorkUnits();
    /// @notice The validator already committed to this round.
    error AlreadyCommitted(uint256 taskId, uint256 round, address validator);
    /// @notice reveal by a validator that did not commit to this round.
    error NotCommitted(uint256 taskId, uint256 round, address validator);
    /// @notice The validator already revealed for this round.
    error AlreadyRevealed(uint256 taskId, uint256 round, address validator);
    /// @notice The revealed values do not hash to the validator's commitment.
    error RevealDoesNotMatchCommit(uint256 taskId, uint256 round, address validator);
    /// @notice The reject bitmap has the wrong number of words for the round's submissions.
    error BitmapLengthMismatch(uint256 taskId, uint256 round, uint256 expectedWords, uint256 actualWords);
    /// @notice The reject bitmap sets a bit at an index >= the number of submissions.
    error BitmapBitOutOfRange(uint256 taskId, uint256 round, uint256 submissions);
    /// @notice finalize with maxItems = 0.
    error ZeroMaxItems();
    /// @notice submissionOf for a round that is not live (settled and its slot reused, or not
    ///         opened) or an index >= its submission count.
    error NoSuchSubmission(uint256 taskId, uint256 round, uint256 index);
    /// @notice The settlement module was called directly instead of through Concord.
    error NotDelegated();
    /// @notice The round's check seed is not fixed yet. `shareEnd` is the time from which
    ///         `fixSeed` fixes it from whatever shares were revealed (earlier once every committed
    ///         share is revealed); 0 when the round is not live.
    error SeedNotReady(uint256 taskId, uint256 round, uint256 shareEnd);
    /// @notice The validator already committed a seed share to this round.
    error ShareAlreadyCommitted(uint256 taskId, uint256 round, address validator);
    /// @notice revealSeedShare by a validator that committed no share to this round.
    error ShareNotCommitted(uint256 taskId, uint256 round, address validator);
    /// @notice The validator already revealed its seed share for this round.
    error ShareAlreadyRevealed(uint256 taskId, uint256 round, address validator);
    /// @notice The revealed share does not hash to the validator's share commitment.
    error ShareDoesNotMatch(uint256 taskId, uint256 round, address validator);
    /// @notice Share reveals for this round ended at `shareEnd`.
    error ShareWindowClosed(uint256 taskId, uint256 round, uint256 shareEnd);
    /// @notice Flags for this round ended at `flagEnd`.
    error FlagWindowClosed(uint256 taskId, uint256 round, uint256 flagEnd);
    /// @notice The validator already flagged in this round.
    error AlreadyFlagged(uint256 taskId, uint256 round, address validator);
    /// @notice More than `max` flagged items.
    error TooManyFlags(uint256 taskId, uint256 round, uint256 count, uint256 max);
    /// @notice commitSeconds below `min` (the commit phase holds share reveals, flags, commits).
    error CommitPhaseTooShort(uint256 given, uint256 min);
    /// @notice topUp of a task that can open no further round (maxRounds all opened).
    error NoFurtherRounds(uint256 taskId);
    /// @notice A validator removed for not committing may join again once the head round
    ///         reaches `untilRound`.
    error RejoinCooldown(uint256 taskId, address node, uint256 untilRound);
}
