// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IConcord} from "./interfaces/IConcord.sol";
import {Pipeline} from "./Pipeline.sol";

/// @title TaskBook
/// @notice Tasks: parameters fixed at creation, an escrowed budget anyone can top up, and the
///         model digest per round. The initiator can close a task (no round opens any more) and
///         reclaim what is left once the task is over (the last round of a maxRounds task, or
///         every round opened before the close, settled); nobody else can move escrow.
/// @dev The state-changing task functions run in the `ConcordSettlement` module (delegatecall,
///      same storage); this contract holds their entry points and the task views.
abstract contract TaskBook is IConcord, ReentrancyGuardTransient, Pipeline {
    // ---------------------------------------------------------------------------------------
    // External
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function createTask(TaskParams calldata, uint256) external nonReentrant returns (uint256 taskId) {
        return abi.decode(_delegate(), (uint256));
    }

    /// @inheritdoc IConcord
    function topUp(uint256, uint256) external nonReentrant {
        _delegate();
    }

    /// @inheritdoc IConcord
    function reclaimBudget(uint256) external {
        _delegate();
    }

    /// @inheritdoc IConcord
    function closeTask(uint256) external {
        _delegate();
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function MAX_VALIDATORS() external pure returns (uint256) {
        return _MAX_VALIDATORS;
    }

    /// @inheritdoc IConcord
    function MAX_ASYNC_LEVEL() external pure returns (uint256) {
        return _MAX_ASYNC_LEVEL;
    }

    /// @inheritdoc IConcord
    function MAX_FLAGS() external pure returns (uint256) {
        return _MAX_FLAGS;
    }

    /// @inheritdoc IConcord
    function MIN_COMMIT_SECONDS() external pure returns (uint256) {
        return _MIN_COMMIT_SECONDS;
    }

    /// @inheritdoc IConcord
    function REJOIN_COOLDOWN_ROUNDS() external pure returns (uint256) {
        return _REJOIN_COOLDOWN_ROUNDS;
    }

    /// @inheritdoc IConcord
    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @inheritdoc IConcord
    function taskParams(uint256 taskId) external view returns (TaskParams memory p) {
        TaskConfig memory c = _config(taskId);
        p = TaskParams({
            specDigest: c.specDigest,
            initialModelDigest: _model[taskId][0],
            trainerRewardPerRound: c.trainerReward,
            validatorFeePerRound: c.validatorFee,
            minTrainerStake: c.minTrainerStake,
            minValidatorStake: c.minValidatorStake,
            slashAmount: c.slashAmount,
            submitSeconds: c.submitSeconds,
            commitSeconds: c.commitSeconds,
            revealSeconds: c.revealSeconds,
            maxRounds: c.maxRounds,
            bountyBps: c.bountyBps,
            asyncLevel: c.asyncLevel,
            minValidators: c.minValidators,
            maxWorkUnits: c.maxWorkUnits
        });
    }

    /// @inheritdoc IConcord
    function taskState(uint256 taskId) external view returns (TaskState memory) {
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _task[taskId];
        return TaskState({
            initiator: c.initiator,
            budget: st.budget,
            headRound: st.head,
            finalizedRounds: st.finalized,
            trainers: st.trainers,
            validators: st.validators,
            validatorSlots: st.validatorSlots,
            resumeAt: st.resumeAt,
            closed: st.closed
        });
    }

    /// @inheritdoc IConcord
    function taskEscrow(uint256 taskId) external view returns (uint256 held, uint256 budget, uint256 reserved) {
        TaskConfig storage c = _config(taskId);
        TaskSlot memory st = _task[taskId];
        uint256 ring = uint256(c.asyncLevel) + 1;
        uint256 perRound = _perRound(c);
        for (uint256 r = st.finalized; r <= st.head; ++r) {
            reserved += perRound - _settle[taskId][r % ring].trainerPaid;
        }
        return (_held[taskId], st.budget, reserved);
    }

    /// @inheritdoc IConcord
    function modelDigest(uint256 taskId, uint32 model) external view returns (bytes32 digest, bool isFinal) {
        _config(taskId);
        if (model > _task[taskId].finalized) return (bytes32(0), false);
        return (_model[taskId][model], true);
    }

    /// @inheritdoc IConcord
    function latestModel(uint256 taskId) external view returns (uint32 model, bytes32 digest) {
        _config(taskId);
        model = _task[taskId].finalized;
        digest = _model[taskId][model];
    }

    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    /// @dev Run the current call's function (same selector and arguments) in the settlement
    ///      module on this contract's storage and return its return data (Concord holds the
    ///      module's address and implements this).
    function _delegate() internal virtual returns (bytes memory ret);
}
