// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IConcord} from "./interfaces/IConcord.sol";
import {Pipeline} from "./Pipeline.sol";

/// @title NodeRegistry
/// @notice Trainers and validators register with an ERC-20 stake, add to it, and unbond it
///         after a delay. A node joined to any task cannot unbond: joined nodes may have
///         unfinalized work, and their whole stake (unbonding part included) stays slashable.
/// @dev register, addStake and completeUnbond run in the `ConcordSettlement` module
///      (delegatecall, same storage); this contract holds their entry points, the unbond
///      request (it needs the immutable delay) and the node view.
abstract contract NodeRegistry is IConcord, ReentrancyGuardTransient, Pipeline {
    using SafeCast for uint256;

    // ---------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    uint256 public immutable unbondDelay;

    // ---------------------------------------------------------------------------------------
    // Constructor
    // ---------------------------------------------------------------------------------------

    constructor(uint256 unbondDelay_) {
        unbondDelay = unbondDelay_;
    }

    // ---------------------------------------------------------------------------------------
    // External
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function register(Role, uint256) external nonReentrant {
        _delegate();
    }

    /// @inheritdoc IConcord
    function addStake(uint256) external nonReentrant {
        _delegate();
    }

    /// @inheritdoc IConcord
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Node storage node = _registered(msg.sender);
        if (node.joinedTasks != 0) revert PendingWork(msg.sender, node.joinedTasks);
        uint256 available = uint256(node.stake) - node.unbonding;
        if (amount > available) revert UnbondExceedsStake(msg.sender, available, amount);
        uint256 unbonding = uint256(node.unbonding) + amount; // <= stake, fits uint96
        uint256 unbondAt = block.timestamp + unbondDelay;
        node.unbonding = uint96(unbonding);
        node.unbondAt = unbondAt.toUint40();
        emit UnbondRequested(msg.sender, amount, unbonding, unbondAt);
    }

    /// @inheritdoc IConcord
    function completeUnbond() external {
        _delegate();
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IConcord
    function nodeInfo(address node) external view returns (NodeInfo memory) {
        Node memory n = _nodes[node];
        return NodeInfo({
            role: n.role, stake: n.stake, unbonding: n.unbonding, unbondAt: n.unbondAt, joinedTasks: n.joinedTasks
        });
    }

    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    /// @dev Run the current call's function in the settlement module (see TaskBook._delegate).
    function _delegate() internal virtual returns (bytes memory ret);
}
