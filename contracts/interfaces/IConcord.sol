// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Concord protocol interface
/// @notice The complete external surface of the Concord protocol contract: node registry,
///         task book, round pipeline (submit, commit, reveal, finalize) and pull payments.
///         One deployed contract holds every token (stakes, task escrows, credited balances),
///         so `token.balanceOf(concord) == totalLiabilities()` at all times.
/// @dev Conventions used throughout:
///      - Token amounts are in the smallest unit of the protocol token (`token()`); they are
///        stored as uint96 (up to ~7.9e28), so any input above that reverts with OpenZeppelin's
///        `SafeCastOverflowedUintDowncast`.
///      - Rounds of a task are numbered 0, 1, 2, ...; round r turns model r into model r + 1.
///        Model 0 is the task's initial model. "Model m is final" means round m - 1 is finalized
///        (or void), i.e. `m <= finalizedRounds`.
///      - Phases are decided by block timestamps: round r opens at `openAt`; its submit phase
///        lasts `submitSeconds`, then commit `commitSeconds`, then reveal `revealSeconds`. A phase
///        closes at its deadline, or early in the transaction of the act that completes the
///        joined set (the last joined trainer submits / the last joined validator commits / the
///        last committer reveals); the next phase then starts at that timestamp.
///      - Pipeline: round r + 1 opens once round r's submit phase has closed, model
///        (r + 1 - asyncLevel) is final, the task budget covers one more round and maxRounds is
///        not reached. Its `openAt` is the moment the last of these became true, whichever
///        transaction records it (`advance`, `submit`, `commit`, `join`, `topUp`, `finalize`).
///      - Reject bitmaps: submission i of a round is bit (i % 256) of word (i / 256), least
///        significant bit first; bit set = reject. A round with n submissions takes exactly
///        ceil(n / 256) words and every bit at index >= n must be zero.
interface IConcord {
    // ---------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------

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
    /// @param commitSeconds Length of the commit phase (> 0).
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
    struct MemberInfo {
        bool joined;
        Role role;
        uint8 validatorIndex;
        bool hasSubmitted;
        uint32 lastSubmitRound;
        uint32 joinedRound;
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

    // ---------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------

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
    /// @notice The task was closed by its initiator (no join, no top-up, no second close).
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

    // ---------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------

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
    ///         neither paid nor slashed, and its share of the reward returns to the budget.
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
    /// @notice A validator that committed but did not reveal was slashed (to the task budget).
    event ValidatorSlashed(uint256 indexed taskId, uint256 indexed round, address indexed validator, uint256 amount);
    /// @notice A validator joined before round `round` opened committed nothing in it: it left
    ///         the task (slot freed, no slash); it may join again.
    event ValidatorRemoved(uint256 indexed taskId, uint256 indexed round, address indexed validator);
    /// @notice Round settled: model round+1 is `nextModelDigest`; `returned` tokens went back
    ///         to the task budget (unpaid reward/fee, rounding dust, slashes minus bounties).
    event RoundFinalized(
        uint256 indexed taskId,
        uint256 indexed round,
        bytes32 nextModelDigest,
        bool isVoid,
        uint256 acceptedWork,
        uint256 returned
    );
    /// @notice Tokens left the protocol to `account` from its credited balance.
    event Withdrawn(address indexed account, uint256 amount);

    // ---------------------------------------------------------------------------------------
    // Node registry
    // ---------------------------------------------------------------------------------------

    /// @notice Register the caller as a trainer or validator, staking `amount` tokens
    ///         (pulled with transferFrom; approve first).
    function register(Role role, uint256 amount) external;

    /// @notice Add `amount` tokens to the caller's stake.
    function addStake(uint256 amount) external;

    /// @notice Start unbonding `amount` of the caller's stake; it can be released after
    ///         `unbondDelay()` seconds (a new request restarts the delay). Refused while the
    ///         caller is joined to any task. Unbonding stake stays slashable.
    function requestUnbond(uint256 amount) external;

    /// @notice Release the caller's unbonding stake into its credited balance once the delay
    ///         passed and it is joined to no task. Withdraw it with `withdraw`.
    function completeUnbond() external;

    // ---------------------------------------------------------------------------------------
    // Task book
    // ---------------------------------------------------------------------------------------

    /// @notice Create a task, escrowing `budget` tokens from the caller (transferFrom). Round 0
    ///         opens now and reserves its reward + fee, so `budget` must cover one round.
    /// @return taskId The new task's id (ids start at 1).
    function createTask(TaskParams calldata params, uint256 budget) external returns (uint256 taskId);

    /// @notice Add `amount` tokens (transferFrom the caller) to a task's budget. Anyone may.
    function topUp(uint256 taskId, uint256 amount) external;

    /// @notice Credit the leftover budget of an ended task to its initiator: a maxRounds task
    ///         whose last round is settled, or a closed task whose rounds in flight are settled.
    function reclaimBudget(uint256 taskId) external;

    /// @notice Close a task (initiator only): no further round opens; the rounds already open
    ///         run and settle as usual, then `reclaimBudget` returns what is left. The exit of
    ///         budget-limited tasks, and of tasks whose rounds keep voiding.
    function closeTask(uint256 taskId) external;

    // ---------------------------------------------------------------------------------------
    // Rounds
    // ---------------------------------------------------------------------------------------

    /// @notice Join a task with the caller's registered role; needs the task's minimum stake
    ///         for that role (stake not unbonding). A validator gets the lowest free slot index
    ///         (at most MAX_VALIDATORS at once; a slot is freed when its validator leaves or is
    ///         removed for not committing).
    function join(uint256 taskId) external;

    /// @notice Leave a task. Refused while the caller has a submission or commitment in a
    ///         round that is not finalized yet.
    function leave(uint256 taskId) external;

    /// @notice Record rounds that are due to open (anyone may call; every round function does
    ///         this too). No-op when nothing is due.
    function advance(uint256 taskId) external;

    /// @notice Submit the caller's work for `round` (must be the round in its submit phase),
    ///         built on model `baseRound` (round - asyncLevel <= baseRound <= round, final).
    ///         One submission per trainer per round; a digest already seen is accepted.
    /// @param bundleDigest sha256 of the submission manifest.
    /// @param proofRoot Merkle root of the TOPLOC proof hashes.
    /// @param workUnits Claimed work (reward weight); validators recompute it.
    function submit(
        uint256 taskId,
        uint32 round,
        uint32 baseRound,
        bytes32 bundleDigest,
        bytes32 proofRoot,
        uint64 workUnits
    ) external;

    /// @notice Commit to a verdict during the round's commit phase:
    ///         `commitment = commitHash(taskId, round, rejectWords, nextModelDigest, salt, msg.sender)`.
    function commit(uint256 taskId, uint32 round, bytes32 commitment) external;

    /// @notice Reveal the committed verdict during the reveal phase.
    /// @param rejectWords Reject bitmap, ceil(submissions / 256) words (layout: see contract doc).
    /// @param nextModelDigest Digest of the model the validator computed for round + 1 (non-zero).
    /// @param salt The secret salt used in the commitment.
    function reveal(uint256 taskId, uint32 round, uint256[] calldata rejectWords, bytes32 nextModelDigest, bytes32 salt)
        external;

    /// @notice Settle a round after its reveal phase, doing at most `maxItems` steps (anyone
    ///         may call; repeat until it returns true). Rounds finalize in order. Steps: one per
    ///         submission to tally (slash rejected ones, bounty to their rejecters), then one per
    ///         submission to pay accepted ones pro rata to workUnits; the last call pays the
    ///         validator fee to the validators that revealed the winning digest, slashes
    ///         committed-but-unrevealed validators, fixes model round+1 and returns unspent
    ///         tokens to the task budget. A submission is rejected (slashed) when more than half
    ///         of the revealing validators reject it, accepted (paid) when fewer than half do,
    ///         and neither on a tie. No fee is paid for a round without submissions. Validators
    ///         joined before the round opened that did not commit lose their slot. Only a round
    ///         that opened, whose reveal phase ended and that is not settled can be finalized,
    ///         once. The winning digest needs strictly more votes
    ///         than any other; on a tie the model stays (model round+1 = model round) and the
    ///         fee returns to the budget. With fewer than minValidators reveals the round is
    ///         void (one call): no trainer is slashed or paid, no fee is paid, the model stays,
    ///         but committed-but-unrevealed validators are still slashed (withholding a reveal
    ///         is how a round gets voided).
    /// @return done True once the round is settled.
    function finalize(uint256 taskId, uint32 round, uint256 maxItems) external returns (bool done);

    // ---------------------------------------------------------------------------------------
    // Balances
    // ---------------------------------------------------------------------------------------

    /// @notice Transfer `amount` of the caller's credited balance to the caller. The only way
    ///         tokens leave the protocol.
    function withdraw(uint256 amount) external;

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The protocol's ERC-20 token (stakes, escrow, rewards).
    function token() external view returns (address);

    /// @notice Seconds between requestUnbond and completeUnbond.
    function unbondDelay() external view returns (uint256);

    /// @notice Most validator slots a task hands out (bitmask width).
    function MAX_VALIDATORS() external view returns (uint256);

    /// @notice Highest asyncLevel a task may use.
    function MAX_ASYNC_LEVEL() external view returns (uint256);

    /// @notice A node's registry entry (role None if not registered).
    function nodeInfo(address node) external view returns (NodeInfo memory);

    /// @notice Credited balance, withdrawable with `withdraw`.
    function balanceOf(address account) external view returns (uint256);

    /// @notice Number of tasks created (ids run 1..taskCount).
    function taskCount() external view returns (uint256);

    /// @notice A task's parameters.
    function taskParams(uint256 taskId) external view returns (TaskParams memory);

    /// @notice A task's mutable state as stored.
    function taskState(uint256 taskId) external view returns (TaskState memory);

    /// @notice A node's membership of a task.
    function memberInfo(uint256 taskId, address node) external view returns (MemberInfo memory);

    /// @notice The address holding validator slot `index` of a task (zero if unassigned).
    function validatorAt(uint256 taskId, uint256 index) external view returns (address);

    /// @notice The newest opened round, counting rounds that are due but not yet recorded
    ///         (its phase, from `phaseOf`, says whether it still takes submissions).
    function currentRound(uint256 taskId) external view returns (uint32);

    /// @notice Phase of a round now.
    function phaseOf(uint256 taskId, uint32 round) external view returns (Phase);

    /// @notice Everything about a round now. Rounds more than asyncLevel+1 behind the head
    ///         keep only phase, finalizedAt and nextModelDigest (their live slot is reused).
    function roundInfo(uint256 taskId, uint32 round) external view returns (RoundInfo memory);

    /// @notice Stored record of submission `index` of an unfinalized round.
    function submissionOf(uint256 taskId, uint32 round, uint256 index)
        external
        view
        returns (address trainer, uint32 baseRound, uint64 workUnits);

    /// @notice Whether a validator committed / revealed for a round (unfinalized rounds).
    function commitStatus(uint256 taskId, uint32 round, address validator)
        external
        view
        returns (bool committed, bool revealed);

    /// @notice Digest of model `model` of a task and whether it is final (model 0 is the
    ///         initial model; model m is fixed by finalizing round m - 1).
    function modelDigest(uint256 taskId, uint32 model) external view returns (bytes32 digest, bool isFinal);

    /// @notice The newest final model: its index and digest.
    function latestModel(uint256 taskId) external view returns (uint32 model, bytes32 digest);

    /// @notice Finalize progress of a round: steps done and total steps (2 * submissions).
    function finalizeCursor(uint256 taskId, uint32 round) external view returns (uint256 cursor, uint256 total);

    /// @notice Sums the protocol owes: escrow (task budgets + reserved round pools), stakes,
    ///         credited balances.
    function totals() external view returns (uint256 escrow, uint256 staked, uint256 credited);

    /// @notice What the contract holds for one task (`held`) and how it splits: the budget and
    ///         the pools reserved by its open rounds (reward + fee, less the rewards already
    ///         paid by a finalize in progress). Always `held == budget + reserved`, and the
    ///         sum of `held` over all tasks is the escrow of `totals()`.
    function taskEscrow(uint256 taskId) external view returns (uint256 held, uint256 budget, uint256 reserved);

    /// @notice escrow + staked + credited; always equals token.balanceOf(this).
    function totalLiabilities() external view returns (uint256);

    /// @notice The commitment a validator must post:
    ///         keccak256(abi.encode(taskId, round, rejectWords, nextModelDigest, salt, validator))
    ///         with types (uint256, uint256, uint256[], bytes32, bytes32, address).
    function commitHash(
        uint256 taskId,
        uint256 round,
        uint256[] calldata rejectWords,
        bytes32 nextModelDigest,
        bytes32 salt,
        address validator
    ) external pure returns (bytes32);
}
