-- Idle periods derived from kt1 telemetry: consecutive reports with the engine on (`active`)
-- and speed 0, lasting at least 60 s. A period starts at its first idle report and ends at the
-- next report if that one is active (the vehicle moved off), else at its last idle report (the
-- engine stopped). A silence of over 5 minutes also ends it at the last idle report, so a
-- device that stops reporting does not stretch a period. Resolution is the report interval.
{%- set min_idle_s = 60 %}
{%- set max_gap_s = 300 %}
with telemetry as (
    select
        asset_id,
        recorded_at,
        is_active,
        speed_kmh,
        lat,
        lon,
        address
    from {{ ref('stg_kt1__telemetry') }}
),

flagged as (
    select
        *,
        coalesce(is_active and speed_kmh = 0, false) as is_idle,
        lead(recorded_at) over by_time as next_recorded_at,
        lead(is_active) over by_time as next_is_active
    from telemetry
    window by_time as (partition by asset_id order by recorded_at)
),

-- Every non-idle report starts a new island; the idle reports after it share its number.
islands as (
    select
        *,
        count(*) filter (where not is_idle) over (
            partition by asset_id order by recorded_at rows unbounded preceding
        ) as island
    from flagged
),

periods as (
    select
        asset_id,
        min(recorded_at) as started_at,
        max(recorded_at) as last_idle_at,
        arg_max(next_recorded_at, recorded_at) as next_recorded_at,
        arg_max(next_is_active, recorded_at) as next_is_active,
        arg_min(lat, recorded_at) as lat,
        arg_min(lon, recorded_at) as lon,
        arg_min(address, recorded_at) as address
    from islands
    where is_idle
    group by asset_id, island
),

bounded as (
    select
        *,
        case
            when next_is_active
                and date_diff('second', last_idle_at, next_recorded_at) <= {{ max_gap_s }}
                then next_recorded_at
            else last_idle_at
        end as ended_at
    from periods
),

trips as (
    select trip_id, source_vehicle_id, started_at, ended_at from {{ ref('int_kt1__trips') }}
),

final as (
    select
        md5('kt1|' || bounded.asset_id || '|' || cast(epoch_us(bounded.started_at) as varchar))
            as idle_period_id,
        'kt1' as source,
        bounded.asset_id as source_vehicle_id,
        bounded.started_at,
        bounded.ended_at,
        cast(date_diff('millisecond', bounded.started_at, bounded.ended_at) / 1000.0 as double)
            as duration_s,
        bounded.lat,
        bounded.lon,
        bounded.address,
        trips.trip_id
    from bounded
    left join trips
        on trips.source_vehicle_id = bounded.asset_id
        and bounded.started_at >= trips.started_at
        and bounded.started_at <= coalesce(trips.ended_at, bounded.started_at)
    where date_diff('millisecond', bounded.started_at, bounded.ended_at) >= {{ min_idle_s }} * 1000
    qualify row_number() over (partition by bounded.asset_id, bounded.started_at order by trips.started_at desc) = 1
)

select * from final
